//! Softmax cross-entropy on class logits: the stage-2 classifier's loss and the plain
//! cross-entropy baseline.

use super::diagnose::{
    check_fault, check_outputs, probe_gradient, read_loss_and_probe, NamedRows, LOSS_SLOT,
};
use crate::backend::{Backend, BufferLen};
use crate::desc::RowsDesc;
use crate::error::{check_len, ensure, Result};

/// Mean softmax cross-entropy over `rows` examples of `classes` logits.
pub struct CrossEntropy<B: Backend> {
    rows: usize,
    classes: usize,
    per_row: B::Buffer,
    /// The mean loss and the gradient's overflow probe.
    totals: B::Buffer,
}

impl<B: Backend> CrossEntropy<B> {
    pub fn new(backend: &B, rows: usize, classes: usize) -> Result<Self> {
        ensure(rows >= 1, "batch", "must be at least 1")?;
        ensure(classes >= 1, "classes", "must be at least 1")?;
        Ok(CrossEntropy {
            rows,
            classes,
            per_row: backend.alloc(rows)?,
            totals: backend.alloc(2)?,
        })
    }

    /// The loss of each example from the last call.
    pub fn per_example_loss(&self) -> &B::Buffer {
        &self.per_row
    }

    /// Returns the mean loss. `logits` (rows x classes) is consumed: on return it holds
    /// `dLoss/dlogits`, so a layer graph can use the activation buffer as its gradient. A loss
    /// that overflows is `NonFinite`.
    pub fn forward_backward(
        &mut self,
        backend: &B,
        logits: &mut B::Buffer,
        labels: &B::IndexBuffer,
    ) -> Result<f64> {
        check_len("logits", logits.len(), self.rows * self.classes)?;
        check_len("labels", labels.len(), self.rows)?;
        let desc = RowsDesc::new(self.rows, self.classes);
        let scale = 1.0 / self.rows as f64;
        backend.softmax_cross_entropy(&desc, scale, logits, labels, &mut self.per_row)?;
        backend.sum(&self.per_row, self.rows, scale, &mut self.totals, LOSS_SLOT)?;
        let len = self.rows * self.classes;
        probe_gradient(backend, logits, len, &mut self.totals)?;
        let (loss, gradient_probe) = read_loss_and_probe(backend, &self.totals)?;
        // The logits now hold gradients: a non-finite logit shows up in its row's gradient.
        let named = [NamedRows {
            name: "logits",
            buf: &*logits,
            rows: self.rows,
            cols: self.classes,
        }];
        check_fault(
            backend,
            "cross-entropy loss",
            &named,
            self.classes as u32,
            |row| ("labels", row),
        )?;
        let per_row = NamedRows {
            name: "cross-entropy loss",
            buf: &self.per_row,
            rows: self.rows,
            cols: 1,
        };
        let gradient = NamedRows {
            name: "logits gradient",
            buf: &*logits,
            rows: self.rows,
            cols: self.classes,
        };
        check_outputs(backend, loss, &per_row, gradient_probe, &gradient)?;
        Ok(loss)
    }
}
