//! Row kernels: L2 normalisation, softmax, log-sum-exp and the fused losses. One workgroup
//! per row (the grid folded into x and y past 65535 rows), looping over the row in strides and
//! reducing in workgroup memory, so rows of any length (a DSCL logits row is 2B + K wide) take
//! one dispatch. A tensor larger than one binding is bound in runs of whole rows (words 12 to 14
//! place the run, see `rows_common.wgsl`).

use dscl_core::backend::RowOps;
use dscl_core::desc::{ContrastiveRowsDesc, PositiveWeighting, RowsDesc};
use dscl_core::error::check_len;
use dscl_core::Result;

use super::{binding_align, f32_bits, groups, image_runs, word};
use crate::buffer::Window;
use crate::kernel::{kernel, Kernel};
use crate::{WgpuBackend, WgpuBuffer};

/// A row module: the shared reductions (rows_common.wgsl) followed by the kernel's own files.
macro_rules! row_module {
    ($($file:literal),+) => {
        concat!(
            include_str!("../shaders/rows_common.wgsl"),
            $(include_str!(concat!("../shaders/", $file))),+
        )
    };
}

const L2_FORWARD: &str = row_module!("rows_l2_forward.wgsl");
const L2_BACKWARD: &str = row_module!("rows_l2_backward.wgsl");
const SOFTMAX: &str = row_module!("rows_softmax.wgsl");
const CONTRASTIVE: &str = row_module!("contrastive.wgsl");
const CONTRASTIVE_LABELS: &str = row_module!("contrastive_labels.wgsl");
const SOFT_CE: &str = row_module!("cross_entropy_common.wgsl", "cross_entropy_soft.wgsl");
const HARD_CE: &str = row_module!("cross_entropy_common.wgsl", "cross_entropy_hard.wgsl");

/// Invocations per row workgroup (`ROW_WG` in rows_common.wgsl).
const ROW_WG: u32 = 256;

kernel!(
    L2_FORWARD_KERNEL,
    L2_FORWARD,
    "l2_normalize_forward",
    [Read, ReadWrite, ReadWrite],
    ROW_WG
);
kernel!(
    L2_BACKWARD_KERNEL,
    L2_BACKWARD,
    "l2_normalize_backward",
    [Read, Read, Read, ReadWrite],
    ROW_WG
);
kernel!(
    SOFTMAX_KERNEL,
    SOFTMAX,
    "row_softmax",
    [Read, ReadWrite],
    ROW_WG
);
kernel!(
    LOGSUMEXP_KERNEL,
    SOFTMAX,
    "row_logsumexp",
    [Read, ReadWrite],
    ROW_WG
);
kernel!(
    CONTRASTIVE_KERNEL,
    CONTRASTIVE,
    "contrastive_rows",
    [ReadWrite, Read, ReadWrite],
    ROW_WG
);
kernel!(
    CONTRASTIVE_LABELS_KERNEL,
    CONTRASTIVE_LABELS,
    "contrastive_labels",
    [Read],
    ROW_WG
);
kernel!(
    SOFT_CE_KERNEL,
    SOFT_CE,
    "soft_cross_entropy",
    [ReadWrite, Read, ReadWrite],
    ROW_WG
);
kernel!(
    HARD_CE_KERNEL,
    HARD_CE,
    "softmax_cross_entropy",
    [ReadWrite, Read, ReadWrite],
    ROW_WG
);

/// Words of a row kernel: its own, then the run's place at words 12 to 14.
const RUN_WORDS: usize = 15;

/// One run of rows: `count` rows from row `first` of the whole tensors.
struct RowRun {
    first: usize,
    count: usize,
    align: u64,
    cols: usize,
}

impl RowRun {
    /// The run's rows of a `cols`-wide matrix, and where they start in that window.
    fn matrix<'a, T>(&self, buf: &'a WgpuBuffer<T>) -> (Window<'a>, usize) {
        buf.window(self.first * self.cols, self.count * self.cols, self.align)
    }

    /// The run's elements of a one-per-row vector, and where they start in that window.
    fn per_row<'a, T>(&self, buf: &'a WgpuBuffer<T>) -> (Window<'a>, usize) {
        buf.window(self.first, self.count, self.align)
    }
}

/// Dispatches `kernel` once per run of the `rows` rows that fits a binding (one run when the
/// tensors do), a workgroup per row. `run_bindings` gives a run's bindings, the offsets of its
/// first matrix and per-row elements in their windows, and the kernel's own words (at most 12,
/// the run's row count among them).
fn dispatch_row_runs<'a, const B: usize>(
    be: &WgpuBackend,
    kernel: &'static Kernel,
    what: &'static str,
    rows: usize,
    cols: usize,
    mut run_bindings: impl FnMut(
        &RowRun,
    ) -> Result<([Window<'a>; B], usize, usize, heapless::Vec<u32, 12>)>,
) -> Result<()> {
    let align = binding_align(be);
    for (first, count) in image_runs(be, what, rows, &[cols, 1])? {
        let run = RowRun {
            first,
            count,
            align,
            cols,
        };
        let (bindings, matrix_at, row_at, own) = run_bindings(&run)?;
        let mut words = [0u32; RUN_WORDS];
        words[..own.len()].copy_from_slice(&own);
        words[12] = word(what, first)?;
        words[13] = word(what, matrix_at)?;
        words[14] = word(what, row_at)?;
        be.rec()
            .dispatch(kernel, &bindings, &words, groups(count, 1)?)?;
    }
    Ok(())
}

/// A kernel's own words, as [`dispatch_row_runs`] takes them.
fn own_words(what: &'static str, words: &[u32]) -> Result<heapless::Vec<u32, 12>> {
    heapless::Vec::from_slice(words).map_err(|_| dscl_core::Error::InvalidArgument {
        what,
        reason: "more kernel words than a row kernel holds (dscl-wgpu bug)",
    })
}

/// `rows` and `cols` as kernel words; every flat index a row kernel forms lies below
/// `rows * cols`, so that must fit in 32 bits too.
fn row_words(what: &'static str, rows: usize, cols: usize) -> Result<[u32; 2]> {
    word(what, rows.saturating_mul(cols))?;
    Ok([word(what, rows)?, word(what, cols)?])
}

/// `[rows, cols, valid_cols]` of a checked [`RowsDesc`].
fn desc_words(what: &'static str, desc: &RowsDesc) -> Result<[u32; 3]> {
    let [r, c] = row_words(what, desc.rows, desc.cols)?;
    Ok([r, c, word(what, desc.valid_cols)?])
}

impl RowOps for WgpuBackend {
    fn l2_normalize_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        norms: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let len = rows.saturating_mul(cols);
        check_len("l2_normalize x", x.len, len)?;
        check_len("l2_normalize y", y.len, len)?;
        check_len("l2_normalize norms", norms.len, rows)?;
        let what = "l2_normalize";
        let [_, c] = row_words(what, rows, cols)?;
        dispatch_row_runs(self, &L2_FORWARD_KERNEL, what, rows, cols, |run| {
            // x and y have the same range, so the same offset in their windows.
            let (xw, matrix_at) = run.matrix(x);
            let (yw, _) = run.matrix(y);
            let (nw, row_at) = run.per_row(norms);
            let own = own_words(what, &[word(what, run.count)?, c])?;
            Ok(([xw, yw, nw], matrix_at, row_at, own))
        })
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
        let len = rows.saturating_mul(cols);
        check_len("l2_normalize_backward y", y.len, len)?;
        check_len("l2_normalize_backward norms", norms.len, rows)?;
        check_len("l2_normalize_backward grad_y", grad_y.len, len)?;
        check_len("l2_normalize_backward grad_x", grad_x.len, len)?;
        let what = "l2_normalize_backward";
        let [_, c] = row_words(what, rows, cols)?;
        dispatch_row_runs(self, &L2_BACKWARD_KERNEL, what, rows, cols, |run| {
            let (yw, matrix_at) = run.matrix(y);
            let (nw, row_at) = run.per_row(norms);
            let (gyw, _) = run.matrix(grad_y);
            let (gxw, _) = run.matrix(grad_x);
            let own = own_words(what, &[word(what, run.count)?, c])?;
            Ok(([yw, nw, gyw, gxw], matrix_at, row_at, own))
        })
    }

    fn row_softmax(&self, desc: &RowsDesc, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<()> {
        desc.check("row_softmax x", x.len)?;
        check_len("row_softmax y", y.len, desc.len())?;
        let what = "row_softmax";
        let [_, c, v] = desc_words(what, desc)?;
        dispatch_row_runs(self, &SOFTMAX_KERNEL, what, desc.rows, desc.cols, |run| {
            let (xw, matrix_at) = run.matrix(x);
            let (yw, _) = run.matrix(y);
            Ok((
                [xw, yw],
                matrix_at,
                0,
                own_words(what, &[word(what, run.count)?, c, v])?,
            ))
        })
    }

    fn row_logsumexp(
        &self,
        desc: &RowsDesc,
        x: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        desc.check("row_logsumexp x", x.len)?;
        check_len("row_logsumexp out", out.len, desc.rows)?;
        let what = "row_logsumexp";
        let [_, c, v] = desc_words(what, desc)?;
        dispatch_row_runs(self, &LOGSUMEXP_KERNEL, what, desc.rows, desc.cols, |run| {
            let (xw, matrix_at) = run.matrix(x);
            let (ow, row_at) = run.per_row(out);
            let own = own_words(what, &[word(what, run.count)?, c, v])?;
            Ok(([xw, ow], matrix_at, row_at, own))
        })
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
        let [_, cols] = row_words(what, desc.rows, desc.cols)?;
        let valid = word(what, desc.valid_cols)?;
        // The shader forms batch + row_offset + r (< 2 * batch <= valid_cols) and loss indices
        // below row_offset + rows <= batch: all within 32 bits once valid_cols is.
        let (decoupled, beta) = match desc.weighting {
            PositiveWeighting::SupCon => (0, 0.0),
            PositiveWeighting::Decoupled { beta } => (1, beta),
        };
        // The label scan runs even for an empty block, as the reference checks labels first.
        if desc.valid_cols > 0 {
            self.rec().dispatch(
                &CONTRASTIVE_LABELS_KERNEL,
                &[labels.whole()],
                &[valid, desc.num_classes],
                [1, 1, 1],
            )?;
        }
        // Anchors are rows of the whole batch (labels and loss stay whole: one element per anchor
        // or column): a run's first block row is anchor row_offset + first.
        let (labels, loss) = (labels.whole(), loss.whole());
        dispatch_row_runs(
            self,
            &CONTRASTIVE_KERNEL,
            what,
            desc.rows,
            desc.cols,
            |run| {
                let (lw, matrix_at) = run.matrix(logits);
                let own = own_words(
                    what,
                    &[
                        word(what, run.count)?,
                        word(what, desc.row_offset + run.first)?,
                        word(what, desc.batch)?,
                        cols,
                        valid,
                        decoupled,
                        f32_bits(beta),
                        f32_bits(desc.grad_scale),
                    ],
                )?;
                Ok(([lw, labels, loss], matrix_at, 0, own))
            },
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
        desc.check("soft_cross_entropy logits", logits.len)?;
        check_len("soft_cross_entropy targets", targets.len, desc.len())?;
        check_len("soft_cross_entropy loss", loss.len, desc.rows)?;
        let what = "soft_cross_entropy";
        let [_, c, v] = desc_words(what, desc)?;
        dispatch_row_runs(self, &SOFT_CE_KERNEL, what, desc.rows, desc.cols, |run| {
            let (lw, matrix_at) = run.matrix(logits);
            let (tw, _) = run.matrix(targets);
            let (sw, row_at) = run.per_row(loss);
            let own = own_words(what, &[word(what, run.count)?, c, v, f32_bits(grad_scale)])?;
            Ok(([lw, tw, sw], matrix_at, row_at, own))
        })
    }

    fn softmax_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        desc.check("softmax_cross_entropy logits", logits.len)?;
        check_len("softmax_cross_entropy labels", labels.len, desc.rows)?;
        check_len("softmax_cross_entropy loss", loss.len, desc.rows)?;
        let what = "softmax_cross_entropy";
        let [_, c, v] = desc_words(what, desc)?;
        dispatch_row_runs(self, &HARD_CE_KERNEL, what, desc.rows, desc.cols, |run| {
            let (lw, matrix_at) = run.matrix(logits);
            // labels and loss are both one per row: the same offset in their windows.
            let (labw, row_at) = run.per_row(labels);
            let (sw, _) = run.per_row(loss);
            let own = own_words(what, &[word(what, run.count)?, c, v, f32_bits(grad_scale)])?;
            Ok(([lw, labw, sw], matrix_at, row_at, own))
        })
    }
}
