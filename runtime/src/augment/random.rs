//! The few random draws the augmentations need, written on [`rand::Rng`]'s `next_u64` so that
//! they never panic (out-of-range probabilities and reversed ranges are accepted) and the
//! sequence of draws for a given RNG state is fixed by this file alone.

use rand::Rng;

/// Uniform in `[0, 1)` with 53 random bits.
pub(crate) fn unit<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Uniform in `[lo, hi)` (or `(hi, lo]` when reversed, `lo` when equal).
pub(crate) fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * unit(rng)
}

/// True with probability `p` (torchvision's `torch.rand(1) < p`): never for `p <= 0`, always
/// for `p >= 1`.
pub(crate) fn chance<R: Rng + ?Sized>(rng: &mut R, p: f64) -> bool {
    unit(rng) < p
}

/// Uniform integer in `0..n` (`0` when `n == 0`), by the multiply-shift method (the bias is
/// below `n / 2^64`).
pub(crate) fn below<R: Rng + ?Sized>(rng: &mut R, n: usize) -> usize {
    ((rng.next_u64() as u128 * n as u128) >> 64) as usize
}

/// A uniformly random permutation of `0..4` (Fisher-Yates).
pub(crate) fn permutation4<R: Rng + ?Sized>(rng: &mut R) -> [usize; 4] {
    let mut p = [0, 1, 2, 3];
    for i in (1..4).rev() {
        p.swap(i, below(rng, i + 1));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn ranges() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            let u = uniform(&mut rng, 2.0, 3.0);
            assert!((2.0..3.0).contains(&u));
            let k = below(&mut rng, 4);
            counts[k] += 1;
            let mut p = permutation4(&mut rng);
            p.sort();
            assert_eq!(p, [0, 1, 2, 3]);
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(below(&mut rng, 0), 0);
        assert!(!chance(&mut rng, 0.0));
        assert!(chance(&mut rng, 1.0));
        assert!(!chance(&mut rng, -3.0));
        assert!(chance(&mut rng, 7.0));
    }
}
