//! Turning a kernel's value fault into an error that names the input at fault.
//!
//! A NaN anywhere in the contrast set makes an *anchor's* log-sum-exp non-finite, so the
//! kernel can only say which anchor broke. Only on that error path do we read the inputs back
//! (in small fixed chunks, no allocation) to say which input row holds the bad value.

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

/// Reads and clears the backend's fault slot; on a fault, returns the error that explains it.
/// Non-finite values are traced to the first input row holding one; labels out of range are
/// attributed through `label_source`, which maps a kernel's label index to (input, index).
pub(crate) fn check_fault<B: Backend>(
    backend: &B,
    what: &'static str,
    inputs: &[NamedRows<'_, B>],
    num_classes: u32,
    label_source: impl Fn(usize) -> (&'static str, usize),
) -> Result<()> {
    let fault: Fault = match backend.take_fault()? {
        None => return Ok(()),
        Some(f) => f,
    };
    match fault.kind {
        FaultKind::NonFinite => {
            for input in inputs {
                if let Some(row) = first_non_finite_row(backend, input.buf, input.rows, input.cols)?
                {
                    return Err(Error::NonFinite {
                        what: input.name,
                        index: row,
                    });
                }
            }
            // Finite inputs can still overflow (a temperature so small the logits are inf).
            Err(Error::NonFinite {
                what,
                index: fault.index,
            })
        }
        FaultKind::LabelOutOfRange => {
            let (name, index) = label_source(fault.index);
            Err(Error::LabelOutOfRange {
                what: name,
                index,
                label: fault.value,
                num_classes,
            })
        }
        FaultKind::ZeroNormRow => Err(Error::from_fault(what, fault, num_classes)),
    }
}

/// Slots of a loss's two-element `totals` buffer, read back together in one download.
pub(crate) const LOSS_SLOT: usize = 0;
pub(crate) const GRADIENT_PROBE_SLOT: usize = 1;

/// Writes `0 * sum(gradient)` into the probe slot: NaN exactly when a gradient element is NaN
/// or infinite (or their sum overflows), so one reduction checks the whole gradient without
/// reading it back.
pub(crate) fn probe_gradient<B: Backend>(
    backend: &B,
    gradient: &B::Buffer,
    len: usize,
    totals: &mut B::Buffer,
) -> Result<()> {
    backend.sum(gradient, len, 0.0, totals, GRADIENT_PROBE_SLOT)
}

/// Reads the loss and the gradient probe: the only values read back on success.
pub(crate) fn read_loss_and_probe<B: Backend>(
    backend: &B,
    totals: &B::Buffer,
) -> Result<(f64, f64)> {
    let mut v = [B::Elem::default(); 2];
    backend.download(totals, 0, &mut v)?;
    Ok((v[LOSS_SLOT].widen(), v[GRADIENT_PROBE_SLOT].widen()))
}

/// Overflow no kernel reports: finite inputs whose loss or gradient is still not finite
/// (logits near the element type's limit, a beta so large the positive weights overflow).
/// Call after [`check_fault`], so a non-finite input is named as the cause first.
pub(crate) fn check_outputs<B: Backend>(
    backend: &B,
    loss: f64,
    per_row_loss: &NamedRows<'_, B>,
    gradient_probe: f64,
    gradient: &NamedRows<'_, B>,
) -> Result<()> {
    for (value, rows) in [(loss, per_row_loss), (gradient_probe, gradient)] {
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
