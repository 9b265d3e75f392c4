//! Row L2-normalisation of embeddings before a contrastive loss, with its backward.

use crate::backend::{Backend, BufferLen};
use crate::error::{check_len, Error, FaultKind, Result};

/// Normalises `rows x cols` embeddings and keeps the norms its backward needs.
pub struct L2Normalize<B: Backend> {
    rows: usize,
    cols: usize,
    norms: B::Buffer,
}

impl<B: Backend> L2Normalize<B> {
    pub fn new(backend: &B, rows: usize, cols: usize) -> Result<Self> {
        Ok(L2Normalize {
            rows,
            cols,
            norms: backend.alloc(rows)?,
        })
    }

    /// `y_r = x_r / ||x_r||`. A zero-norm or non-finite row is recorded as a fault that the
    /// next loss (or [`Self::forward_checked`]) reports; it does not wait for the device.
    pub fn forward(&mut self, backend: &B, x: &B::Buffer, y: &mut B::Buffer) -> Result<()> {
        let len = self.rows * self.cols;
        check_len("normalise input", x.len(), len)?;
        check_len("normalise output", y.len(), len)?;
        backend.l2_normalize_forward(x, y, &mut self.norms, self.rows, self.cols)
    }

    /// As [`Self::forward`], then waits and reports a bad row of `what` as an error.
    pub fn forward_checked(
        &mut self,
        backend: &B,
        what: &'static str,
        x: &B::Buffer,
        y: &mut B::Buffer,
    ) -> Result<()> {
        self.forward(backend, x, y)?;
        match backend.take_fault()? {
            None => Ok(()),
            Some(f) if f.kind == FaultKind::ZeroNormRow => {
                Err(Error::ZeroNormRow { what, row: f.index })
            }
            Some(f) => Err(Error::NonFinite {
                what,
                index: f.index,
            }),
        }
    }

    /// `grad_x = (grad_y - y (y . grad_y)) / ||x||` per row (overwritten).
    pub fn backward(
        &self,
        backend: &B,
        y: &B::Buffer,
        grad_y: &B::Buffer,
        grad_x: &mut B::Buffer,
    ) -> Result<()> {
        let len = self.rows * self.cols;
        check_len("normalise output", y.len(), len)?;
        check_len("normalise output gradient", grad_y.len(), len)?;
        check_len("normalise input gradient", grad_x.len(), len)?;
        backend.l2_normalize_backward(y, &self.norms, grad_y, grad_x, self.rows, self.cols)
    }
}
