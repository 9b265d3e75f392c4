//! Input data for the cases: a small deterministic generator seeded by the proptest case, so a
//! shrunk failure replays with identical values while proptest only shrinks shapes and seeds.

/// SplitMix64: tiny, fast, and good enough for test data.
#[derive(Clone, Debug)]
pub struct Gen {
    state: u64,
}

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen {
            state: seed ^ 0x6a09_e667_f3bc_c909,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`, rounded to f32.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f32 {
        (lo + (hi - lo) * self.unit()) as f32
    }

    /// Standard normal (Box-Muller), rounded to f32.
    pub fn normal(&mut self) -> f32 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        ((-2.0 * u1.ln()).sqrt() * (core::f64::consts::TAU * u2).cos()) as f32
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    pub fn uniform_vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    pub fn normal_vec(&mut self, n: usize, std: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (self.normal() as f64 * std) as f32)
            .collect()
    }

    /// Small integers in `-r..=r` as floats: many exact ties (max-pool argmax rules).
    pub fn int_vec(&mut self, n: usize, r: i64) -> Vec<f32> {
        (0..n)
            .map(|_| (self.below((2 * r + 1) as usize) as i64 - r) as f32)
            .collect()
    }

    /// Contents for an output buffer that must be written without being read: NaN half the
    /// time (a kernel that reads it propagates NaN), random values otherwise.
    pub fn poison(&mut self, n: usize) -> Vec<f32> {
        if self.chance(0.5) {
            vec![f32::NAN; n]
        } else {
            self.normal_vec(n, 3.0)
        }
    }

    /// A small extra length for a buffer: buffers may be longer than a kernel needs, and the
    /// extra elements must come back untouched.
    pub fn slack(&mut self) -> usize {
        if self.chance(0.5) {
            0
        } else {
            1 + self.below(3)
        }
    }
}
