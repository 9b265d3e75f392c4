//! Sample orders for an epoch.
//!
//! Stage 1 of DSCL trains on the long-tailed data as it is: every image once per epoch, in a
//! seeded random order ([`epoch_order`]). Stage 2 re-trains the classifier with
//! class-balanced sampling ([`class_balanced_order`]): pick a class uniformly, then one of its
//! images uniformly, so tail classes are seen as often as head classes. Both are pure
//! functions of (seed, epoch), so a run can be resumed or reproduced exactly.

use super::seeding::{below, stream_rng, TAG_BALANCED, TAG_EPOCH_ORDER, TAG_KEY_SHUFFLE};

/// A random permutation of `0..len`, determined by `seed` and `epoch` (Fisher–Yates).
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = stream_rng(seed, TAG_EPOCH_ORDER, epoch);
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        let j = below(&mut rng, i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// The key shuffle of shuffled batch norm for stage-1 step `global_step` (MoCo's
/// `idx_shuffle = torch.randperm(B)`, drawn once per step): `order` becomes a random
/// permutation of `0..order.len()` (Fisher–Yates), a function of (seed, step) alone so a
/// resumed run draws the same shuffles.
pub fn key_shuffle(seed: u64, global_step: u64, order: &mut [u32]) {
    let mut rng = stream_rng(seed, TAG_KEY_SHUFFLE, global_step);
    for (i, slot) in order.iter_mut().enumerate() {
        *slot = i as u32;
    }
    for i in (1..order.len()).rev() {
        let j = below(&mut rng, i as u64 + 1) as usize;
        order.swap(i, j);
    }
}

/// `count` sample indices drawn with replacement, class-balanced: each draw picks a class
/// uniformly among the classes that have at least one sample, then a sample of that class
/// uniformly. Classes of `0..num_classes` with no sample are never picked (rather than
/// failing), so the draw depends on the labels only; labels at or above `num_classes` are
/// drawn like the others. Empty `labels` give an empty order.
pub fn class_balanced_order(
    labels: &[u32],
    num_classes: usize,
    count: usize,
    seed: u64,
    epoch: u64,
) -> Vec<usize> {
    // `num_classes` cannot change the draw (empty classes are skipped), so buckets go only up
    // to the largest label present: a huge class count from user input must not allocate.
    let _ = num_classes;
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    by_class.retain(|members| !members.is_empty());
    if by_class.is_empty() {
        return Vec::new();
    }
    let mut rng = stream_rng(seed, TAG_BALANCED, epoch);
    (0..count)
        .map(|_| {
            let members = &by_class[below(&mut rng, by_class.len() as u64) as usize];
            members[below(&mut rng, members.len() as u64) as usize]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(1000, 7, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(1000, 7, 0));
        assert_ne!(a, epoch_order(1000, 7, 1));
        assert_ne!(a, epoch_order(1000, 8, 0));
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
        assert!(epoch_order(0, 1, 1).is_empty());
        assert_eq!(epoch_order(1, 1, 1), [0]);
    }

    #[test]
    fn class_balanced_order_balances_classes() {
        // 900 images of class 0, 90 of class 1, 10 of class 2, none of class 3.
        let mut labels = vec![0u32; 900];
        labels.extend([1; 90]);
        labels.extend([2; 10]);
        let order = class_balanced_order(&labels, 4, 30_000, 3, 0);
        assert_eq!(order.len(), 30_000);
        let mut per_class = [0usize; 3];
        for &i in &order {
            per_class[labels[i] as usize] += 1;
        }
        assert!(
            per_class.iter().all(|&n| (9_500..10_500).contains(&n)),
            "{per_class:?}"
        );
        // All ten tail images get drawn.
        let tail: std::collections::HashSet<_> = order.iter().filter(|&&i| i >= 990).collect();
        assert_eq!(tail.len(), 10);
        assert_eq!(order, class_balanced_order(&labels, 4, 30_000, 3, 0));
        assert_ne!(order, class_balanced_order(&labels, 4, 30_000, 3, 1));
        assert!(class_balanced_order(&[], 4, 10, 0, 0).is_empty());
        assert_eq!(
            class_balanced_order(&[1, 1], usize::MAX, 3, 0, 0),
            class_balanced_order(&[1, 1], 2, 3, 0, 0)
        );
    }
}
