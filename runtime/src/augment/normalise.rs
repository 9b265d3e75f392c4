//! `Normalize(mean, std)`: the last step of every view, producing the model's input.

use crate::data::Image;

/// ImageNet channel means (RGB).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The CHW tensor `(x - mean[c]) / std[c]`, consuming the image.
pub fn normalise(img: Image, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let plane = img.plane();
    let mut v = img.pixels;
    if plane == 0 {
        return v;
    }
    for (c, ch) in v.chunks_exact_mut(plane).enumerate() {
        let (m, inv) = (mean[c], 1.0 / std[c]);
        ch.iter_mut().for_each(|x| *x = (*x - m) * inv);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_affine() {
        let mut img = Image::new(2, 1);
        img.pixels = vec![0.485, 1.0, 0.0, 0.456, 0.406 + 0.225, 0.406];
        let v = normalise(img, IMAGENET_MEAN, IMAGENET_STD);
        let want = [0.0, (1.0 - 0.485) / 0.229, -0.456 / 0.224, 0.0, 1.0, 0.0];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} {b}");
        }
        let id = normalise(Image::new(3, 3), [0.0; 3], [1.0; 3]);
        assert_eq!(id, vec![0.0; 27]);
    }
}
