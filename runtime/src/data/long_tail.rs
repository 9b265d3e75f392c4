//! Exponential long-tailed subsampling, as CIFAR-10/100-LT are built (Cui et al. 2019, and the
//! DSCL code): class `c` of `C` keeps `floor(n_max * (1/imbalance)^(c / (C - 1)))` images, so
//! class 0 is the head with `n_max` and class `C - 1` the tail with `n_max / imbalance`.
//!
//! `n_max` is the smallest per-class pool size, so every class can supply its quota (for
//! CIFAR every class has 5,000 images and this is the published `img_max`). Each class keeps
//! its first images in file order, so the subset is deterministic and needs no seed.

use anyhow::{bail, ensure};

/// The number of images each class keeps, given each class's pool size. Every class keeps at
/// least one. `imbalance` (head / tail ratio) must be finite and at least 1; every class must
/// have at least one image.
pub fn long_tailed_counts(pool_sizes: &[usize], imbalance: f64) -> anyhow::Result<Vec<usize>> {
    ensure!(
        imbalance.is_finite() && imbalance >= 1.0,
        "the imbalance ratio must be a finite number >= 1 (head count / tail count), got \
         {imbalance}"
    );
    let Some(&n_max) = pool_sizes.iter().min() else {
        bail!("long-tailed subsampling needs at least one class");
    };
    if n_max == 0 {
        let empty = pool_sizes.iter().position(|&n| n == 0).unwrap_or(0);
        bail!("class {empty} has no image, so no long-tailed subset can include it");
    }
    let classes = pool_sizes.len();
    // Computed as the reference Python does (`img_max * (imb_factor ** (c / (C - 1.0)))`,
    // imb_factor = 1 / imbalance) so the counts match the published splits exactly.
    let factor = 1.0 / imbalance;
    Ok((0..classes)
        .map(|c| {
            let exponent = if classes > 1 {
                c as f64 / (classes as f64 - 1.0)
            } else {
                0.0
            };
            let n = (n_max as f64 * factor.powf(exponent)).floor() as usize;
            n.clamp(1, n_max)
        })
        .collect())
}

/// Indices (ascending, into `labels`) of the long-tailed subset: for each class `c`, its first
/// [`long_tailed_counts`]`[c]` images in file order. Labels must be below `num_classes`.
pub fn long_tailed_indices(
    labels: &[u32],
    num_classes: usize,
    imbalance: f64,
) -> anyhow::Result<Vec<usize>> {
    if num_classes > labels.len() {
        // Checked before allocating per-class counters: a class count from user input can be
        // absurdly large, and some class would be empty anyway.
        bail!(
            "{num_classes} classes but only {} samples: some class has no image, so no \
             long-tailed subset can include it",
            labels.len()
        );
    }
    let mut pool = vec![0usize; num_classes];
    for (i, &l) in labels.iter().enumerate() {
        let Some(n) = pool.get_mut(l as usize) else {
            bail!("sample {i} has label {l}, but there are {num_classes} classes");
        };
        *n += 1;
    }
    let mut quota = long_tailed_counts(&pool, imbalance)?;
    let mut kept = Vec::with_capacity(quota.iter().sum());
    for (i, &l) in labels.iter().enumerate() {
        let q = &mut quota[l as usize];
        if *q > 0 {
            *q -= 1;
            kept.push(i);
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cifar_lt_counts_match_the_published_splits() {
        let c10 = long_tailed_counts(&[5000; 10], 100.0).unwrap();
        assert_eq!(c10, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]);
        assert_eq!(c10.iter().sum::<usize>(), 12406);
        let c10_10 = long_tailed_counts(&[5000; 10], 10.0).unwrap();
        assert_eq!(c10_10.iter().sum::<usize>(), 20431);
        assert_eq!(c10_10[9], 500);
        let c100 = long_tailed_counts(&[500; 100], 100.0).unwrap();
        assert_eq!((c100[0], c100[99]), (500, 5));
        assert_eq!(c100.iter().sum::<usize>(), 10847);
        let c100_10 = long_tailed_counts(&[500; 100], 10.0).unwrap();
        assert_eq!(c100_10.iter().sum::<usize>(), 19573);
    }

    #[test]
    fn imbalance_one_is_balanced_at_the_smallest_pool() {
        assert_eq!(long_tailed_counts(&[7, 5, 9], 1.0).unwrap(), [5, 5, 5]);
        assert_eq!(long_tailed_counts(&[7], 50.0).unwrap(), [7]);
    }

    #[test]
    fn at_least_one_per_class() {
        assert_eq!(long_tailed_counts(&[3, 3], 1000.0).unwrap(), [3, 1]);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(long_tailed_counts(&[5, 5], 0.5).is_err());
        assert!(long_tailed_counts(&[5, 5], f64::NAN).is_err());
        assert!(long_tailed_counts(&[5, 0], 10.0).is_err());
        assert!(long_tailed_counts(&[], 10.0).is_err());
        assert!(long_tailed_indices(&[0, 3], 2, 10.0).is_err());
        assert!(long_tailed_indices(&[0, 1], usize::MAX, 10.0).is_err());
    }

    #[test]
    fn keeps_the_first_images_of_each_class_in_file_order() {
        let labels = [1, 0, 1, 0, 1, 0, 1, 0, 0];
        // Pools 5 and 4: n_max = 4; imbalance 4 -> class 0 keeps 4, class 1 keeps 1.
        assert_eq!(
            long_tailed_indices(&labels, 2, 4.0).unwrap(),
            [0, 1, 3, 5, 7]
        );
    }
}
