//! The FIFO queue of past keys and their labels (MoCo's dictionary). Entries that hold no key
//! yet are not part of the contrast set: the losses see only the first `filled` rows.

use crate::backend::{Backend, BufferLen};
use crate::error::{check_len, ensure, Result};

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
