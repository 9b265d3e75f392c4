//! Row kernels: L2 normalisation, softmax, log-sum-exp and the fused losses. One workgroup
//! per row (the grid folded into x and y past 65535 rows), looping over the row in strides and
//! reducing in workgroup memory, so rows of any length (a DSCL logits row is 2B + K wide) take
//! one dispatch. Buffers are bound whole.

use dscl_core::desc::{ContrastiveRowsDesc, PositiveWeighting, RowsDesc};
use dscl_core::error::check_len;
use dscl_core::Result;

use super::{f32_bits, groups, word};
use crate::kernel::kernel;
use crate::{WgpuBackend, WgpuBuffer};

/// A row module: the shared reductions (rows_common.wgsl) followed by the kernel's own file.
macro_rules! row_module {
    ($file:literal) => {
        concat!(
            include_str!("../shaders/rows_common.wgsl"),
            include_str!(concat!("../shaders/", $file))
        )
    };
}

const L2_FORWARD: &str = row_module!("rows_l2_forward.wgsl");
const L2_BACKWARD: &str = row_module!("rows_l2_backward.wgsl");
const SOFTMAX: &str = row_module!("rows_softmax.wgsl");
const CONTRASTIVE: &str = row_module!("contrastive.wgsl");
const CONTRASTIVE_LABELS: &str = row_module!("contrastive_labels.wgsl");
const SOFT_CE: &str = row_module!("cross_entropy_soft.wgsl");
const HARD_CE: &str = row_module!("cross_entropy_hard.wgsl");

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

/// `rows` and `cols` as kernel words; every flat index a row kernel forms lies below
/// `rows * cols`, so that must fit in 32 bits too.
fn row_words(what: &'static str, rows: usize, cols: usize) -> Result<[u32; 2]> {
    word(what, rows.saturating_mul(cols))?;
    Ok([word(what, rows)?, word(what, cols)?])
}

pub(crate) fn l2_normalize_forward(
    be: &WgpuBackend,
    x: &WgpuBuffer<f32>,
    y: &mut WgpuBuffer<f32>,
    norms: &mut WgpuBuffer<f32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let len = rows.saturating_mul(cols);
    check_len("l2_normalize x", x.len, len)?;
    check_len("l2_normalize y", y.len, len)?;
    check_len("l2_normalize norms", norms.len, rows)?;
    let [r, c] = row_words("l2_normalize", rows, cols)?;
    be.rec().dispatch(
        &L2_FORWARD_KERNEL,
        &[x.whole(), y.whole(), norms.whole()],
        &[r, c],
        groups(rows, 1)?,
    )
}

pub(crate) fn l2_normalize_backward(
    be: &WgpuBackend,
    y: &WgpuBuffer<f32>,
    norms: &WgpuBuffer<f32>,
    grad_y: &WgpuBuffer<f32>,
    grad_x: &mut WgpuBuffer<f32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let len = rows.saturating_mul(cols);
    check_len("l2_normalize_backward y", y.len, len)?;
    check_len("l2_normalize_backward norms", norms.len, rows)?;
    check_len("l2_normalize_backward grad_y", grad_y.len, len)?;
    check_len("l2_normalize_backward grad_x", grad_x.len, len)?;
    let [r, c] = row_words("l2_normalize_backward", rows, cols)?;
    be.rec().dispatch(
        &L2_BACKWARD_KERNEL,
        &[y.whole(), norms.whole(), grad_y.whole(), grad_x.whole()],
        &[r, c],
        groups(rows, 1)?,
    )
}

/// `[rows, cols, valid_cols]` of a checked [`RowsDesc`].
fn desc_words(what: &'static str, desc: &RowsDesc) -> Result<[u32; 3]> {
    let [r, c] = row_words(what, desc.rows, desc.cols)?;
    Ok([r, c, word(what, desc.valid_cols)?])
}

pub(crate) fn row_softmax(
    be: &WgpuBackend,
    desc: &RowsDesc,
    x: &WgpuBuffer<f32>,
    y: &mut WgpuBuffer<f32>,
) -> Result<()> {
    desc.check("row_softmax x", x.len)?;
    check_len("row_softmax y", y.len, desc.len())?;
    be.rec().dispatch(
        &SOFTMAX_KERNEL,
        &[x.whole(), y.whole()],
        &desc_words("row_softmax", desc)?,
        groups(desc.rows, 1)?,
    )
}

pub(crate) fn row_logsumexp(
    be: &WgpuBackend,
    desc: &RowsDesc,
    x: &WgpuBuffer<f32>,
    out: &mut WgpuBuffer<f32>,
) -> Result<()> {
    desc.check("row_logsumexp x", x.len)?;
    check_len("row_logsumexp out", out.len, desc.rows)?;
    be.rec().dispatch(
        &LOGSUMEXP_KERNEL,
        &[x.whole(), out.whole()],
        &desc_words("row_logsumexp", desc)?,
        groups(desc.rows, 1)?,
    )
}

pub(crate) fn contrastive_rows(
    be: &WgpuBackend,
    desc: &ContrastiveRowsDesc,
    logits: &mut WgpuBuffer<f32>,
    labels: &WgpuBuffer<u32>,
    loss: &mut WgpuBuffer<f32>,
) -> Result<()> {
    desc.check(logits.len, labels.len, loss.len)?;
    let what = "contrastive_rows";
    let [rows, cols] = row_words(what, desc.rows, desc.cols)?;
    let valid = word(what, desc.valid_cols)?;
    // The shader forms batch + row_offset + r (< 2 * batch <= valid_cols) and loss indices
    // below row_offset + rows <= batch: all within 32 bits once valid_cols is.
    let (decoupled, beta) = match desc.weighting {
        PositiveWeighting::SupCon => (0, 0.0),
        PositiveWeighting::Decoupled { beta } => (1, beta),
    };
    // The label scan runs even for an empty block, as the reference checks labels first.
    if desc.valid_cols > 0 {
        be.rec().dispatch(
            &CONTRASTIVE_LABELS_KERNEL,
            &[labels.whole()],
            &[valid, desc.num_classes],
            [1, 1, 1],
        )?;
    }
    be.rec().dispatch(
        &CONTRASTIVE_KERNEL,
        &[logits.whole(), labels.whole(), loss.whole()],
        &[
            rows,
            word(what, desc.row_offset)?,
            word(what, desc.batch)?,
            cols,
            valid,
            decoupled,
            f32_bits(beta),
            f32_bits(desc.grad_scale),
        ],
        groups(desc.rows, 1)?,
    )
}

pub(crate) fn soft_cross_entropy(
    be: &WgpuBackend,
    desc: &RowsDesc,
    grad_scale: f64,
    logits: &mut WgpuBuffer<f32>,
    targets: &WgpuBuffer<f32>,
    loss: &mut WgpuBuffer<f32>,
) -> Result<()> {
    desc.check("soft_cross_entropy logits", logits.len)?;
    check_len("soft_cross_entropy targets", targets.len, desc.len())?;
    check_len("soft_cross_entropy loss", loss.len, desc.rows)?;
    let [r, c, v] = desc_words("soft_cross_entropy", desc)?;
    be.rec().dispatch(
        &SOFT_CE_KERNEL,
        &[logits.whole(), targets.whole(), loss.whole()],
        &[r, c, v, f32_bits(grad_scale)],
        groups(desc.rows, 1)?,
    )
}

pub(crate) fn softmax_cross_entropy(
    be: &WgpuBackend,
    desc: &RowsDesc,
    grad_scale: f64,
    logits: &mut WgpuBuffer<f32>,
    labels: &WgpuBuffer<u32>,
    loss: &mut WgpuBuffer<f32>,
) -> Result<()> {
    desc.check("softmax_cross_entropy logits", logits.len)?;
    check_len("softmax_cross_entropy labels", labels.len, desc.rows)?;
    check_len("softmax_cross_entropy loss", loss.len, desc.rows)?;
    let [r, c, v] = desc_words("softmax_cross_entropy", desc)?;
    be.rec().dispatch(
        &HARD_CE_KERNEL,
        &[logits.whole(), labels.whole(), loss.whole()],
        &[r, c, v, f32_bits(grad_scale)],
        groups(desc.rows, 1)?,
    )
}
