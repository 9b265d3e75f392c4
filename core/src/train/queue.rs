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
