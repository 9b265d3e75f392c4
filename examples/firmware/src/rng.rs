//! SplitMix64 (Steele, Lea & Flood 2014): a tiny seeded generator for the weights'
//! initialisation, the sampling order and the augmentations. Eight bytes of state, no
//! allocation, and the same sequence on the host and on the microcontroller.

use core::convert::Infallible;

use rand_core::TryRng;

/// SplitMix64 generator.
#[derive(Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn draw(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 for `n == 0`), by multiply-shift: its bias is below `n / 2^32`,
    /// irrelevant for the small `n` drawn here.
    pub fn below(&mut self, n: usize) -> usize {
        (((self.draw() >> 32) as u128 * n as u128) >> 32) as usize
    }

    /// Uniform in `[0, 1)` with 24 random bits (every value exact in `f32`).
    pub fn unit_f32(&mut self) -> f32 {
        (self.draw() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }
}

impl TryRng for SplitMix64 {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.draw() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.draw())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.draw().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}
