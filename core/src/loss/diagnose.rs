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

/// Reads one element of a device buffer as f64 (the scalar loss).
pub(crate) fn read_scalar<B: Backend>(backend: &B, buf: &B::Buffer, index: usize) -> Result<f64> {
    let mut v = [B::Elem::default(); 1];
    backend.download(buf, index, &mut v)?;
    Ok(v[0].widen())
}
