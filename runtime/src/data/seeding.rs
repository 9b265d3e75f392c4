//! Deterministic random streams: every random choice in data loading comes from a generator
//! seeded from (run seed, purpose, position), never from shared state, so the result does not
//! depend on thread timing or on how many workers run.
//!
//! Uniform integers are drawn here with Lemire's multiply-and-reject method on `next_u64`
//! rather than through `rand`'s distribution helpers, whose exact outputs may change between
//! `rand` releases: a fixed seed must keep giving the same epochs.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

/// Stream tags: distinct purposes never share a generator state.
pub(crate) const TAG_EPOCH_ORDER: u64 = 0x6570_6f63_685f_6f72; // "epoch_or"
pub(crate) const TAG_BALANCED: u64 = 0x6261_6c61_6e63_6564; // "balanced"
pub(crate) const TAG_KEY_SHUFFLE: u64 = 0x6b65_795f_7368_7566; // "key_shuf"
const TAG_SAMPLE: u64 = 0x7361_6d70_6c65_5f5f; // "sample__"
const TAG_EPOCH_SEED: u64 = 0x6570_6f63_685f_7365; // "epoch_se"

/// SplitMix64's finaliser: a bijective mix with good avalanche, so nearby inputs (seed 1 and
/// 2, positions 7 and 8) give unrelated outputs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A generator for stream `tag`, element `index`, under `seed`.
pub(crate) fn stream_rng(seed: u64, tag: u64, index: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(mix(mix(seed ^ tag) ^ index))
}

/// The generator the loader gives the transform of the sample at `position` in the order.
/// Position, not data-set index: the same image seen twice in an order is augmented twice,
/// differently. Pass a different seed per epoch ([`epoch_seed`]) so epochs differ.
pub fn sample_rng(seed: u64, position: u64) -> Xoshiro256PlusPlus {
    stream_rng(seed, TAG_SAMPLE, position)
}

/// A per-epoch seed derived from the run seed, for the loader's augmentation streams.
pub fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    mix(mix(seed ^ TAG_EPOCH_SEED) ^ epoch)
}

/// A uniform integer in `0..n` (`n > 0`), unbiased.
pub(crate) fn below(rng: &mut impl Rng, n: u64) -> u64 {
    debug_assert!(n > 0);
    // Values of the low product word below `threshold` would over-represent some results.
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = rng.next_u64() as u128 * n as u128;
        if m as u64 >= threshold {
            return (m >> 64) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        assert_eq!(sample_rng(1, 5).next_u64(), sample_rng(1, 5).next_u64());
        assert_ne!(sample_rng(1, 5).next_u64(), sample_rng(1, 6).next_u64());
        assert_ne!(sample_rng(1, 5).next_u64(), sample_rng(2, 5).next_u64());
        assert_ne!(epoch_seed(0, 0), epoch_seed(0, 1));
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut rng = sample_rng(0, 0);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[below(&mut rng, 7) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(below(&mut rng, 1), 0);
    }
}
