//! Softmax cross-entropy on class logits: the stage-2 classifier's loss and the plain
//! cross-entropy baseline.

use super::diagnose::{
    check_outputs, explain_fault, read_own_totals, write_totals, LabelSource, NamedRows, Suspect,
    Totals, TOTALS_LEN,
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
            totals: backend.alloc(TOTALS_LEN)?,
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
        self.record(backend, logits, labels)?;
        self.read_and_finish(backend, logits)
    }

    /// The first half of [`Self::forward_backward`]: queues the loss, its gradient (into
    /// `logits`) and the values [`Self::read_and_finish`] reads back; reads nothing.
    pub(crate) fn record(
        &mut self,
        backend: &B,
        logits: &mut B::Buffer,
        labels: &B::IndexBuffer,
    ) -> Result<()> {
        check_len("logits", logits.len(), self.rows * self.classes)?;
        check_len("labels", labels.len(), self.rows)?;
        let desc = RowsDesc::new(self.rows, self.classes);
        let scale = 1.0 / self.rows as f64;
        backend.softmax_cross_entropy(&desc, scale, logits, labels, &mut self.per_row)?;
        let len = self.rows * self.classes;
        write_totals(
            backend,
            &self.per_row,
            self.rows,
            scale,
            logits,
            len,
            Totals::Own,
            &mut self.totals,
        )
    }

    /// The second half of [`Self::forward_backward`]: the loss and the fault slot in one read,
    /// then the error that explains a fault or an overflow. `logits` must still hold the
    /// gradient [`Self::record`] wrote (later work may read it, not write it).
    pub(crate) fn read_and_finish(&self, backend: &B, logits: &B::Buffer) -> Result<f64> {
        let (readout, fault) = read_own_totals(backend, &self.totals)?;
        // The logits now hold gradients: a non-finite logit shows up in its row's gradient.
        let named = [NamedRows::new("logits", logits, self.rows, self.classes)];
        let suspect = Suspect {
            what: "cross-entropy loss",
            inputs: &named,
            num_classes: self.classes as u32,
            labels: LabelSource::Rows("labels"),
            readout,
        };
        explain_fault(backend, fault, &[suspect])?;
        let per_row = NamedRows::new("cross-entropy loss", &self.per_row, self.rows, 1);
        let gradient = NamedRows::new("logits gradient", logits, self.rows, self.classes);
        check_outputs(backend, readout, &per_row, &gradient)?;
        Ok(readout.loss)
    }
}
