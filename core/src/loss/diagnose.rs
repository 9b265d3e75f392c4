//! Turning a kernel's value fault into an error that names the input at fault.
//!
//! A NaN anywhere in the contrast set makes an *anchor's* log-sum-exp non-finite, so the
//! kernel can only say which anchor broke. Only on that error path do we read the inputs back
//! (in small fixed chunks, no allocation) to say which input row holds the bad value.
//!
//! On success a loss costs one read: its totals (the mean loss and a probe of its gradient)
//! and the fault slot come back together ([`Backend::download_with_fault`]). A caller that
//! queues several losses gives each a place in one totals buffer ([`Totals::At`]), reads them
//! all at once and explains a fault against all of them ([`explain_fault`]).

use crate::backend::Backend;
use crate::element::Element;
use crate::error::{Error, Fault, FaultKind, Result};
use num_traits::Float;

const CHUNK: usize = 256;

/// The first row (of `cols` elements) of `buf[..rows * cols]` holding a NaN or infinity.
pub(crate) fn first_non_finite_row<B: Backend>(
    backend: &B,
    buf: &B::Buffer,
    rows: usize,
    cols: usize,
) -> Result<Option<usize>> {
    let total = rows * cols;
    let mut chunk = [B::Elem::default(); CHUNK];
    let mut start = 0;
    while start < total {
        let n = CHUNK.min(total - start);
        backend.download(buf, start, &mut chunk[..n])?;
        if let Some(pos) = chunk[..n].iter().position(|v| !v.is_finite()) {
            return Ok(Some((start + pos) / cols.max(1)));
        }
        start += n;
    }
    Ok(None)
}

/// One named input matrix of a loss, for diagnosis.
pub(crate) struct NamedRows<'a, B: Backend> {
    pub name: &'static str,
    pub buf: &'a B::Buffer,
    pub rows: usize,
    pub cols: usize,
}

impl<'a, B: Backend> NamedRows<'a, B> {
    /// `rows x cols` values of `buf`, named `name`.
    pub(crate) fn new(name: &'static str, buf: &'a B::Buffer, rows: usize, cols: usize) -> Self {
        NamedRows {
            name,
            buf,
            rows,
            cols,
        }
    }
}

/// How a loss maps a kernel's label index to (input, index) for `LabelOutOfRange`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LabelSource {
    /// The contrast set's labels `[y; y; queue labels]` of a batch of `batch` anchors.
    ContrastSet { batch: usize },
    /// One label per kernel row, of the input named.
    Rows(&'static str),
}

impl LabelSource {
    fn locate(self, j: usize) -> (&'static str, usize) {
        match self {
            LabelSource::ContrastSet { batch } if j < 2 * batch => ("labels", j % batch),
            LabelSource::ContrastSet { batch } => ("queue_labels", j - 2 * batch),
            LabelSource::Rows(name) => (name, j),
        }
    }
}

/// A loss whose kernels may have recorded the fault being explained: its name, its inputs,
/// its labels and the values read back for it.
pub(crate) struct Suspect<'a, B: Backend> {
    pub what: &'static str,
    pub inputs: &'a [NamedRows<'a, B>],
    pub num_classes: u32,
    pub labels: LabelSource,
    pub readout: LossReadout,
}

/// On a fault (as [`Backend::take_fault`] or [`Backend::download_with_fault`] returned it),
/// the error that explains it, given the losses queued since the slot was last taken, in
/// queue order. Non-finite values are traced to the first input row holding one (the first
/// suspect's inputs first); labels out of range and zero-norm rows are recorded only before or
/// by the first suspect's kernels (the later losses' kernels record neither), so they are its.
///
/// The slot keeps only the first fault of all the suspects, so a non-finite fault with finite
/// inputs (an overflow) cannot say whose kernel recorded it: it goes to the first suspect whose
/// loss or gradient came out non-finite, or to the first suspect when none did. For one
/// suspect that is exactly what reading the slot after each loss would say.
pub(crate) fn explain_fault<B: Backend>(
    backend: &B,
    fault: Option<Fault>,
    suspects: &[Suspect<'_, B>],
) -> Result<()> {
    let (fault, first) = match (fault, suspects.first()) {
        (Some(fault), Some(first)) => (fault, first),
        (None, _) => return Ok(()),
        // No loss to blame (no caller does this): the fault as recorded.
        (Some(fault), None) => return Err(Error::from_fault("kernel", fault, 0)),
    };
    match fault.kind {
        FaultKind::NonFinite => {
            for input in suspects.iter().flat_map(|s| s.inputs) {
                if let Some(row) = first_non_finite_row(backend, input.buf, input.rows, input.cols)?
                {
                    return Err(Error::NonFinite {
                        what: input.name,
                        index: row,
                    });
                }
            }
            // Finite inputs can still overflow (a temperature so small the logits are inf).
            let blamed = suspects
                .iter()
                .find(|s| !s.readout.is_finite())
                .unwrap_or(first);
            Err(Error::NonFinite {
                what: blamed.what,
                index: fault.index,
            })
        }
        FaultKind::LabelOutOfRange => {
            let (name, index) = first.labels.locate(fault.index);
            Err(Error::LabelOutOfRange {
                what: name,
                index,
                label: fault.value,
                num_classes: first.num_classes,
            })
        }
        FaultKind::ZeroNormRow => Err(Error::from_fault(first.what, fault, first.num_classes)),
    }
}

/// Slots of a loss's two values, from the start of its place in a totals buffer: the mean
/// loss and the gradient probe, read back together (with the fault slot) in one download.
pub(crate) const LOSS_SLOT: usize = 0;
pub(crate) const GRADIENT_PROBE_SLOT: usize = 1;
/// Elements of one loss's totals.
pub(crate) const TOTALS_LEN: usize = 2;

/// Where a loss writes its mean loss and gradient probe.
pub(crate) enum Totals<'t, B: Backend> {
    /// Its own [`TOTALS_LEN`]-element buffer, read by its own `forward_backward`.
    Own,
    /// `buffer[slot..slot + TOTALS_LEN]`, read by the caller together with other values.
    At(&'t mut B::Buffer, usize),
}

/// Writes `scale * sum(per_row[..rows])` into the totals' `LOSS_SLOT` and `0 *
/// sum(gradient)` into their `GRADIENT_PROBE_SLOT`, in `own` or where `totals` says. The probe
/// is NaN exactly when a gradient element is NaN or infinite (or their sum overflows), so one
/// reduction checks the whole gradient without reading it back.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_totals<B: Backend>(
    backend: &B,
    per_row: &B::Buffer,
    rows: usize,
    scale: f64,
    gradient: &B::Buffer,
    gradient_len: usize,
    totals: Totals<'_, B>,
    own: &mut B::Buffer,
) -> Result<()> {
    let (totals, slot) = match totals {
        Totals::Own => (own, 0),
        Totals::At(buffer, slot) => (buffer, slot),
    };
    backend.sum(per_row, rows, scale, totals, slot + LOSS_SLOT)?;
    backend.sum(
        gradient,
        gradient_len,
        0.0,
        totals,
        slot + GRADIENT_PROBE_SLOT,
    )
}

/// A loss's values as read back: the only values a step reads on success.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LossReadout {
    pub loss: f64,
    pub gradient_probe: f64,
}

impl LossReadout {
    /// The loss whose totals start at `values[slot]`.
    pub(crate) fn at<E: Element>(values: &[E], slot: usize) -> Self {
        LossReadout {
            loss: values[slot + LOSS_SLOT].widen(),
            gradient_probe: values[slot + GRADIENT_PROBE_SLOT].widen(),
        }
    }

    fn is_finite(&self) -> bool {
        self.loss.is_finite() && self.gradient_probe.is_finite()
    }
}

/// Reads a loss's own totals and takes the fault slot, in one wait for the device.
pub(crate) fn read_own_totals<B: Backend>(
    backend: &B,
    totals: &B::Buffer,
) -> Result<(LossReadout, Option<Fault>)> {
    let mut values = [B::Elem::default(); TOTALS_LEN];
    let fault = backend.download_with_fault(totals, 0, &mut values)?;
    Ok((LossReadout::at(&values, 0), fault))
}

/// Overflow no kernel reports: finite inputs whose loss or gradient is still not finite
/// (logits near the element type's limit, a beta so large the positive weights overflow).
/// Call after [`explain_fault`], so a non-finite input is named as the cause first.
pub(crate) fn check_outputs<B: Backend>(
    backend: &B,
    readout: LossReadout,
    per_row_loss: &NamedRows<'_, B>,
    gradient: &NamedRows<'_, B>,
) -> Result<()> {
    for (value, rows) in [
        (readout.loss, per_row_loss),
        (readout.gradient_probe, gradient),
    ] {
        if !value.is_finite() {
            let index = first_non_finite_row(backend, rows.buf, rows.rows, rows.cols)?;
            return Err(Error::NonFinite {
                what: rows.name,
                index: index.unwrap_or(0),
            });
        }
    }
    Ok(())
}
