//! Row kernels (`kernels/rows.cu`): L2 normalisation, softmax, logsumexp, and the losses fused
//! with their gradients in place on the logits (cross-entropy against soft targets and hard
//! labels, SupCon / DSCL over a block of anchors). One block of 256 threads per row, looping
//! over the row in strides, so rows of any length take one launch; every sum is Kahan per
//! thread, then a tree in shared memory, after the row's maximum is subtracted (torch's
//! shift), in the wgpu shaders' order. Faults (non-finite rows, zero-norm rows, labels out of
//! range) go to the backend's fault slot.

use dscl_core::backend::RowOps;
use dscl_core::desc::{ContrastiveRowsDesc, PositiveWeighting, RowsDesc};
use dscl_core::error::check_len;
use dscl_core::Result;

use super::{launch_match, u32_of};
use crate::backend::{block_per, launch, too_large, CudaBackend, CudaBuffer};
use crate::kernel_args::kernel_args;

kernel_args! {
    /// What the row kernels read (`RowsArgs` in `kernels/rows.cu`).
    pub(crate) struct RowsArgs {
        rows: u32,
        cols: u32,
        /// The leading columns that take part; the rest are masked.
        valid: u32,
        /// The contrastive loss's first anchor, the batch (anchor i's view is column
        /// batch + i) and the label bound.
        row_offset: u32,
        batch: u32,
        classes: u32,
        /// 1 for DSCL's weighting with `beta`, 0 for SupCon's.
        decoupled: u32,
        beta: f32,
        grad_scale: f32,
    }
}

impl RowsArgs {
    /// `rows` rows of `cols` columns, all valid, after checking that every index a row kernel
    /// forms (below rows * cols) fits a `u32`.
    fn matrix(what: &'static str, rows: usize, cols: usize, valid: usize) -> Result<Self> {
        rows.checked_mul(cols)
            .map_or(Err(too_large(what)), |l| u32_of(what, l))?;
        Ok(RowsArgs {
            rows: u32_of(what, rows)?,
            cols: u32_of(what, cols)?,
            valid: u32_of(what, valid)?,
            ..Self::default()
        })
    }

    /// A checked [`RowsDesc`].
    fn of(what: &'static str, desc: &RowsDesc) -> Result<Self> {
        Self::matrix(what, desc.rows, desc.cols, desc.valid_cols)
    }
}

impl RowOps for CudaBackend {
    fn l2_normalize_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        norms: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let what = "l2_normalize";
        let len = rows.checked_mul(cols).ok_or(too_large(what))?;
        check_len("l2_normalize x", x.len, len)?;
        check_len("l2_normalize y", y.len, len)?;
        check_len("l2_normalize norms", norms.len, rows)?;
        if rows == 0 {
            return Ok(());
        }
        let args = RowsArgs {
            rows: u32_of(what, rows)?,
            cols: u32_of(what, cols)?,
            ..RowsArgs::default()
        };
        let fault = self.fault.borrow();
        launch!(
            self,
            "l2_normalize_forward",
            block_per(what, rows)?,
            [&*fault, &x.slice, &mut y.slice, &mut norms.slice, &args]
        )
    }

    fn l2_normalize_backward(
        &self,
        y: &Self::Buffer,
        norms: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let what = "l2_normalize_backward";
        let len = rows.checked_mul(cols).ok_or(too_large(what))?;
        check_len("l2_normalize_backward y", y.len, len)?;
        check_len("l2_normalize_backward norms", norms.len, rows)?;
        check_len("l2_normalize_backward grad_y", grad_y.len, len)?;
        check_len("l2_normalize_backward grad_x", grad_x.len, len)?;
        if rows == 0 {
            return Ok(());
        }
        let args = RowsArgs {
            rows: u32_of(what, rows)?,
            cols: u32_of(what, cols)?,
            ..RowsArgs::default()
        };
        launch!(
            self,
            "l2_normalize_backward",
            block_per(what, rows)?,
            [
                &y.slice,
                &norms.slice,
                &grad_y.slice,
                &mut grad_x.slice,
                &args
            ]
        )
    }

    fn row_softmax(&self, desc: &RowsDesc, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<()> {
        desc.check("row_softmax x", x.len)?;
        check_len("row_softmax y", y.len, desc.len())?;
        let args = RowsArgs::of("row_softmax", desc)?;
        if desc.rows == 0 {
            return Ok(());
        }
        let fault = self.fault.borrow();
        launch!(
            self,
            "row_softmax",
            block_per("row_softmax", desc.rows)?,
            [&*fault, &x.slice, &mut y.slice, &args]
        )
    }

    fn row_logsumexp(
        &self,
        desc: &RowsDesc,
        x: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        desc.check("row_logsumexp x", x.len)?;
        check_len("row_logsumexp out", out.len, desc.rows)?;
        let args = RowsArgs::of("row_logsumexp", desc)?;
        if desc.rows == 0 {
            return Ok(());
        }
        let fault = self.fault.borrow();
        launch!(
            self,
            "row_logsumexp",
            block_per("row_logsumexp", desc.rows)?,
            [&*fault, &x.slice, &mut out.slice, &args]
        )
    }

    fn contrastive_rows(
        &self,
        desc: &ContrastiveRowsDesc,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        desc.check(logits.len, labels.len, loss.len)?;
        let what = "contrastive_rows";
        let (decoupled, beta) = match desc.weighting {
            PositiveWeighting::SupCon => (0, 0.0),
            PositiveWeighting::Decoupled { beta } => (1, beta as f32),
        };
        // Every failure here is the same error, so the order of the checks does not show.
        let block = RowsArgs::matrix(what, desc.rows, desc.cols, desc.valid_cols)?;
        let args = RowsArgs {
            row_offset: u32_of(what, desc.row_offset)?,
            batch: u32_of(what, desc.batch)?,
            classes: desc.num_classes,
            decoupled,
            beta,
            grad_scale: desc.grad_scale as f32,
            ..block
        };
        let fault = self.fault.borrow();
        // The label scan runs even for an empty block, as the reference checks labels first.
        if desc.valid_cols > 0 {
            launch!(
                self,
                "contrastive_labels",
                block_per(what, 1)?,
                [&*fault, &labels.slice, &args]
            )?;
        }
        if desc.rows == 0 {
            return Ok(());
        }
        launch!(
            self,
            "contrastive_rows",
            block_per(what, desc.rows)?,
            [
                &*fault,
                &mut logits.slice,
                &labels.slice,
                &mut loss.slice,
                &args
            ]
        )
    }

    fn soft_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        targets: &Self::Buffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        let targets = Targets::Soft(targets);
        cross_entropy(self, desc, grad_scale, logits, targets, loss)
    }

    fn softmax_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        let targets = Targets::Labels(labels);
        cross_entropy(self, desc, grad_scale, logits, targets, loss)
    }
}

/// What a cross-entropy scores its logits against: a distribution per row, or a class per row.
#[derive(Clone, Copy)]
enum Targets<'a> {
    Soft(&'a CudaBuffer<f32>),
    Labels(&'a CudaBuffer<u32>),
}

/// The fused cross-entropy and its gradient over `desc`'s rows, in place on `logits`.
fn cross_entropy(
    be: &CudaBackend,
    desc: &RowsDesc,
    grad_scale: f64,
    logits: &mut CudaBuffer<f32>,
    targets: Targets<'_>,
    loss: &mut CudaBuffer<f32>,
) -> Result<()> {
    // The kernel's name, and its buffers' names for the length errors.
    let (what, [logits_name, targets_name, loss_name]) = match targets {
        Targets::Soft(_) => (
            "soft_cross_entropy",
            [
                "soft_cross_entropy logits",
                "soft_cross_entropy targets",
                "soft_cross_entropy loss",
            ],
        ),
        Targets::Labels(_) => (
            "softmax_cross_entropy",
            [
                "softmax_cross_entropy logits",
                "softmax_cross_entropy labels",
                "softmax_cross_entropy loss",
            ],
        ),
    };
    desc.check(logits_name, logits.len)?;
    let (targets_len, expected) = match targets {
        Targets::Soft(t) => (t.len, desc.len()),
        Targets::Labels(t) => (t.len, desc.rows),
    };
    check_len(targets_name, targets_len, expected)?;
    check_len(loss_name, loss.len, desc.rows)?;
    let args = RowsArgs {
        grad_scale: grad_scale as f32,
        ..RowsArgs::of(what, desc)?
    };
    if desc.rows == 0 {
        return Ok(());
    }
    let fault = be.fault.borrow();
    // Each arm's `t` is its own buffer type: f32 distributions, u32 classes.
    launch_match!(
        be,
        match targets {
            Targets::Soft(t) => "soft_cross_entropy",
            Targets::Labels(t) => "softmax_cross_entropy",
        },
        block_per(what, desc.rows)?,
        [&*fault, &mut logits.slice, &t.slice, &mut loss.slice, &args]
    )
}
