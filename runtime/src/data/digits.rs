//! The built-in default data set: the UCI 8x8 optical handwritten digits, embedded in the
//! binary so the runtime trains and evaluates out of the box with no download.
//!
//! Source: UCI Machine Learning Repository, "Optical Recognition of Handwritten Digits"
//! (E. Alpaydin, C. Kaynak, 1998), the 1,797-image copy scikit-learn ships as `load_digits`.
//! License: CC BY 4.0; see `runtime/data/uci-digits/README.md`, which must stay next to the
//! embedded files.

use super::Image;
use super::{Dataset, Split};

const IMAGES: &[u8] = include_bytes!("../../data/uci-digits/images.u8");
const LABELS: &[u8] = include_bytes!("../../data/uci-digits/labels.u8");

/// Number of images in the embedded copy.
pub const DIGITS_COUNT: usize = 1797;
const SIDE: usize = 8;
const PIXELS: usize = SIDE * SIDE;
/// Pixel values are counts of set pixels in a 4x4 block: 0..=16.
const MAX_VALUE: f32 = 16.0;
/// Test images per class: the last ones of each class in file order, giving a balanced test
/// set (the long-tailed benchmarks all evaluate on a balanced split).
const TEST_PER_CLASS: usize = 50;
const CLASSES: usize = 10;

const _: () = assert!(IMAGES.len() == DIGITS_COUNT * PIXELS);
const _: () = assert!(LABELS.len() == DIGITS_COUNT);

/// A split of the embedded digits. `Split::Test` is the last 50 images of each class (500);
/// `Split::Train` is the rest (1,297), the pool that long-tailed subsampling draws from.
#[derive(Clone, Debug)]
pub struct Digits {
    /// Indices into the embedded file, in file order.
    members: Vec<usize>,
    labels: Vec<u32>,
}

impl Digits {
    /// One split of the embedded digits.
    pub fn new(split: Split) -> Self {
        let mut remaining_test = [0usize; CLASSES];
        // Walking the file backwards, the first 50 of each class met are its last 50.
        let mut is_test = vec![false; DIGITS_COUNT];
        for (i, &label) in LABELS.iter().enumerate().rev() {
            let c = label as usize;
            if remaining_test[c] < TEST_PER_CLASS {
                remaining_test[c] += 1;
                is_test[i] = true;
            }
        }
        let members: Vec<usize> = (0..DIGITS_COUNT)
            .filter(|&i| is_test[i] == (split == Split::Test))
            .collect();
        Self::from_members(members)
    }

    /// All 1,797 embedded images, in file order.
    pub fn all() -> Self {
        Self::from_members((0..DIGITS_COUNT).collect())
    }

    fn from_members(members: Vec<usize>) -> Self {
        let labels = members.iter().map(|&i| LABELS[i] as u32).collect();
        Digits { members, labels }
    }
}

impl Dataset for Digits {
    fn len(&self) -> usize {
        self.members.len()
    }

    fn num_classes(&self) -> usize {
        CLASSES
    }

    fn labels(&self) -> &[u32] {
        &self.labels
    }

    fn load(&self, i: usize) -> anyhow::Result<Image> {
        let k = self.members[i];
        Ok(Image::from_gray(
            SIDE,
            SIDE,
            &IMAGES[k * PIXELS..(k + 1) * PIXELS],
            MAX_VALUE,
        ))
    }

    fn describe(&self, i: usize) -> String {
        format!("built-in UCI digits image {}", self.members[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_class(d: &Digits) -> Vec<usize> {
        let mut counts = vec![0; CLASSES];
        for &l in d.labels() {
            counts[l as usize] += 1;
        }
        counts
    }

    #[test]
    fn counts_match_the_readme() {
        let all = Digits::all();
        assert_eq!(all.len(), 1797);
        assert_eq!(
            per_class(&all),
            [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
        );
        let test = Digits::new(Split::Test);
        assert_eq!(test.len(), 500);
        assert_eq!(per_class(&test), [50; 10]);
        let train = Digits::new(Split::Train);
        assert_eq!(train.len(), 1297);
        assert_eq!(
            per_class(&train),
            [128, 132, 127, 133, 131, 132, 131, 129, 124, 130]
        );
    }

    #[test]
    fn test_split_is_the_last_fifty_of_each_class() {
        let test = Digits::new(Split::Test);
        let train = Digits::new(Split::Train);
        for c in 0..CLASSES as u32 {
            let last_train = (0..train.len())
                .filter(|&i| train.label(i) == c)
                .map(|i| train.members[i])
                .max()
                .unwrap();
            let first_test = (0..test.len())
                .filter(|&i| test.label(i) == c)
                .map(|i| test.members[i])
                .min()
                .unwrap();
            assert!(last_train < first_test);
        }
    }

    #[test]
    fn images_are_scaled_gray() {
        let all = Digits::all();
        let img = all.load(0).unwrap();
        assert_eq!((img.width, img.height), (8, 8));
        assert_eq!(img.channel(0), img.channel(1));
        assert_eq!(img.channel(0), img.channel(2));
        assert!(img.pixels.iter().all(|&v| (0.0..=1.0).contains(&v)));
        for (k, &v) in IMAGES[..PIXELS].iter().enumerate() {
            assert_eq!(img.pixels[k], v as f32 / 16.0);
        }
        assert!(IMAGES.iter().all(|&v| v <= 16) && IMAGES.contains(&16));
    }
}
