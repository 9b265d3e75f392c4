//! The FIFO queue of past keys and their labels (MoCo's dictionary). Entries that hold no key
//! yet are not part of the contrast set: the losses see only the first `filled` rows.
//!
//! Two starts: [`KeyQueue::new`] is empty (every row masked until a key arrives), and
//! [`KeyQueue::fill_random`] is the official one, the authors' `DSCL.__init__`: `queue =
//! normalize(randn(dim, K), dim=0)` (K random unit keys) with `main_label_queue = randint(0,
//! num_classes, (1, K))` (random labels), all K rows in the contrast set from the first step.

use rand_core::Rng;

use crate::backend::{Backend, BufferLen};
use crate::element::Element;
use crate::error::{check_len, ensure, Result};
use crate::nn::tensors::{standard_normal, unit_uniform};

/// Host-side staging for [`KeyQueue::fill_random`] (no allocation: the values go up in chunks).
const STAGING: usize = 256;

pub struct KeyQueue<B: Backend> {
    pub keys: B::Buffer,
    pub labels: B::IndexBuffer,
    capacity: usize,
    dim: usize,
    filled: usize,
    /// Row the next key goes to.
    next: usize,
}

impl<B: Backend> KeyQueue<B> {
    /// An empty queue of `capacity` keys of `dim` values (capacity 0: no queue).
    pub fn new(backend: &B, capacity: usize, dim: usize) -> Result<Self> {
        ensure(dim >= 1, "queue dimension", "must be at least 1")?;
        Ok(KeyQueue {
            keys: backend.alloc(capacity.saturating_mul(dim).max(1))?,
            labels: backend.alloc_index(capacity.max(1))?,
            capacity,
            dim,
            filled: 0,
            next: 0,
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Rows holding real keys; always rows `0..filled`.
    pub fn filled(&self) -> usize {
        self.filled
    }
    /// Row the next key will overwrite.
    pub fn next_row(&self) -> usize {
        self.next
    }

    /// Restores the fill level and write position (when resuming from a checkpoint).
    pub fn set_position(&mut self, filled: usize, next: usize) -> Result<()> {
        ensure(
            filled <= self.capacity
                && next < self.capacity.max(1)
                && (filled == self.capacity || next == filled),
            "queue position",
            "inconsistent fill level and write position",
        )?;
        self.filled = filled;
        self.next = next;
        Ok(())
    }

    /// The official start: every row a random unit key (`dim` standard normal deviates divided
    /// by their norm, so uniform on the sphere) with a label uniform in `0..num_classes`, and
    /// the whole queue counted as filled (`filled() == capacity()`, the next key overwriting
    /// row 0), as MoCo's and the authors' DSCL code start. All keys are drawn first, row after
    /// row, then all labels, from `rng` alone, so a seed gives the same queue on every backend
    /// (up to the element type's rounding). `rng` is cloned to look ahead at each row's norm.
    pub fn fill_random<R: Rng + Clone>(
        &mut self,
        backend: &B,
        num_classes: u32,
        rng: &mut R,
    ) -> Result<()> {
        ensure(num_classes >= 1, "queue labels", "need at least one class")?;
        let d = self.dim;
        let mut staging = [B::Elem::default(); STAGING];
        for row in 0..self.capacity {
            // The row's norm from a look-ahead copy of the generator, then the same deviates
            // again, divided by it, in chunks. A zero row (probability below 2^-53 per value)
            // is drawn again.
            let norm = loop {
                let mut ahead = rng.clone();
                let sum: f64 = (0..d)
                    .map(|_| {
                        let z = standard_normal(&mut ahead);
                        z * z
                    })
                    .sum();
                let norm = libm::sqrt(sum);
                if norm > 0.0 {
                    break norm;
                }
                *rng = ahead;
            };
            let mut done = 0;
            while done < d {
                let n = STAGING.min(d - done);
                for v in staging[..n].iter_mut() {
                    *v = B::Elem::from_f64(standard_normal(rng) / norm);
                }
                backend.upload(&mut self.keys, row * d + done, &staging[..n])?;
                done += n;
            }
        }
        let mut labels = [0u32; STAGING];
        let mut done = 0;
        while done < self.capacity {
            let n = STAGING.min(self.capacity - done);
            for l in labels[..n].iter_mut() {
                *l = uniform_below(rng, num_classes);
            }
            backend.upload_index(&mut self.labels, done, &labels[..n])?;
            done += n;
        }
        self.filled = self.capacity;
        self.next = 0;
        Ok(())
    }

    /// Appends `count` keys (`[count, dim]`) and labels, overwriting the oldest once full. With
    /// more keys than the capacity, only the last `capacity` are kept.
    pub fn enqueue(
        &mut self,
        backend: &B,
        keys: &B::Buffer,
        labels: &B::IndexBuffer,
        count: usize,
    ) -> Result<()> {
        check_len("enqueued keys", keys.len(), count.saturating_mul(self.dim))?;
        check_len("enqueued labels", labels.len(), count)?;
        if self.capacity == 0 {
            return Ok(());
        }
        let skip = count.saturating_sub(self.capacity);
        let mut src = skip;
        while src < count {
            let n = (count - src).min(self.capacity - self.next);
            let d = self.dim;
            backend.copy(keys, src * d, &mut self.keys, self.next * d, n * d)?;
            backend.copy_index(labels, src, &mut self.labels, self.next, n)?;
            src += n;
            self.next = (self.next + n) % self.capacity;
            self.filled = (self.filled + n).min(self.capacity);
        }
        Ok(())
    }
}

/// Uniform on `0..n` (`n >= 1`), as `torch.randint(0, n)`: a 53-bit uniform in [0, 1) times
/// `n`, rounded down.
fn uniform_below(rng: &mut impl Rng, n: u32) -> u32 {
    ((unit_uniform(rng) * n as f64) as u32).min(n - 1)
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use crate::reference::{ReferenceBackend, ReferenceBuffer, ReferenceIndexBuffer};
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn fills_in_order_then_overwrites_the_oldest() {
        let be = ReferenceBackend::<f64>::new();
        let mut q = KeyQueue::new(&be, 5, 2).unwrap();
        let push = |q: &mut KeyQueue<_>, first: u32, n: usize| {
            let keys: Vec<f64> = (0..n * 2)
                .map(|e| (first as usize * 2 + e) as f64)
                .collect();
            let labels: Vec<u32> = (0..n as u32).map(|i| first + i).collect();
            q.enqueue(
                &be,
                &ReferenceBuffer::from_vec(keys),
                &ReferenceIndexBuffer::from_vec(labels),
                n,
            )
            .unwrap();
        };
        push(&mut q, 0, 3);
        assert_eq!((q.filled(), q.next_row()), (3, 3));
        assert_eq!(&q.labels.as_slice()[..3], &[0, 1, 2]);
        push(&mut q, 3, 3); // wraps: rows 3, 4 then 0
        assert_eq!((q.filled(), q.next_row()), (5, 1));
        assert_eq!(q.labels.as_slice(), &[5, 1, 2, 3, 4]);
        assert_eq!(&q.keys.as_slice()[..2], &[10.0, 11.0]);
        push(&mut q, 10, 7); // more than the capacity: the last five stay
        assert_eq!(q.filled(), 5);
        let mut held = q.labels.as_slice().to_vec();
        held.sort();
        assert_eq!(held, vec![12, 13, 14, 15, 16]);
    }

    /// SplitMix64: a seeded generator for the tests (the core takes the caller's).
    #[derive(Clone)]
    struct SplitMix(u64);

    impl rand_core::TryRng for SplitMix {
        type Error = core::convert::Infallible;
        fn try_next_u32(&mut self) -> core::result::Result<u32, Self::Error> {
            Ok((self.try_next_u64()? >> 32) as u32)
        }
        fn try_next_u64(&mut self) -> core::result::Result<u64, Self::Error> {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            Ok(z ^ (z >> 31))
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> core::result::Result<(), Self::Error> {
            for chunk in dst.chunks_mut(8) {
                let v = self.try_next_u64()?.to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
            Ok(())
        }
    }

    fn random_queue(
        capacity: usize,
        dim: usize,
        classes: u32,
        seed: u64,
    ) -> KeyQueue<ReferenceBackend<f64>> {
        let be = ReferenceBackend::<f64>::new();
        let mut q = KeyQueue::new(&be, capacity, dim).unwrap();
        q.fill_random(&be, classes, &mut SplitMix(seed)).unwrap();
        q
    }

    #[test]
    fn random_start_is_k_unit_keys_with_labels_in_range_counted_as_full() {
        // dim 300 > the staging chunk, so a row goes up in two pieces.
        for (capacity, dim, classes) in [(600, 4, 7), (5, 300, 1000), (3, 1, 2)] {
            let q = random_queue(capacity, dim, classes, 42);
            assert_eq!((q.filled(), q.next_row()), (capacity, 0));
            let keys = q.keys.as_slice();
            assert_eq!(keys.len(), capacity * dim);
            for row in keys.chunks(dim) {
                let norm: f64 = row.iter().map(|v| v * v).sum::<f64>().sqrt();
                assert!((norm - 1.0).abs() < 1e-12, "row norm {norm}");
            }
            let labels = q.labels.as_slice();
            assert!(labels.iter().all(|&l| l < classes), "{labels:?}");
            // The draws move on from row to row (a 1-d unit key is only +-1).
            if dim > 1 {
                assert_ne!(keys[..dim], keys[keys.len() - dim..]);
            }
            if capacity > 100 {
                let mut seen = [false; 7];
                labels.iter().for_each(|&l| seen[l as usize] = true);
                assert!(seen.iter().all(|&s| s), "{seen:?}");
                // Roughly centred: the mean of 600 unit keys' first coordinate is ~N(0, 1/2400).
                let mean = keys.iter().step_by(dim).sum::<f64>() / capacity as f64;
                assert!(mean.abs() < 0.1, "{mean}");
            }
        }
        // The same seed gives the same queue; another seed another one.
        let (a, b, c) = (
            random_queue(64, 8, 10, 1),
            random_queue(64, 8, 10, 1),
            random_queue(64, 8, 10, 2),
        );
        assert_eq!(a.keys.as_slice(), b.keys.as_slice());
        assert_eq!(a.labels.as_slice(), b.labels.as_slice());
        assert_ne!(a.keys.as_slice(), c.keys.as_slice());
        assert_ne!(a.labels.as_slice(), c.labels.as_slice());
    }

    #[test]
    fn a_random_queue_takes_new_keys_from_row_0_and_stays_full() {
        let be = ReferenceBackend::<f64>::new();
        let mut q = random_queue(4, 2, 3, 7);
        let old = q.keys.as_slice().to_vec();
        q.enqueue(
            &be,
            &ReferenceBuffer::from_vec(vec![5.0, 6.0]),
            &ReferenceIndexBuffer::from_vec(vec![9]),
            1,
        )
        .unwrap();
        assert_eq!((q.filled(), q.next_row()), (4, 1));
        assert_eq!(&q.keys.as_slice()[..2], &[5.0, 6.0]);
        assert_eq!(&q.keys.as_slice()[2..], &old[2..]);
        assert_eq!(q.labels.as_slice()[0], 9);
        // No classes, no labels to draw.
        let mut q = KeyQueue::new(&be, 4, 2).unwrap();
        assert!(q.fill_random(&be, 0, &mut SplitMix(0)).is_err());
    }

    #[test]
    fn refuses_short_inputs_and_inconsistent_positions() {
        let be = ReferenceBackend::<f64>::new();
        let mut q = KeyQueue::new(&be, 4, 3).unwrap();
        let keys = ReferenceBuffer::from_vec(vec![0.0; 5]);
        let labels = ReferenceIndexBuffer::from_vec(vec![0; 2]);
        assert!(q.enqueue(&be, &keys, &labels, 2).is_err());
        assert!(q.set_position(2, 3).is_err());
        assert!(q.set_position(4, 1).is_ok());
    }
}
