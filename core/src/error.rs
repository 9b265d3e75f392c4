//! The one error type of the library: every fallible path says what was wrong and where.

use core::fmt;

/// What a kernel found wrong in the *values* of its inputs (as opposed to their shapes, which
/// are checked on the host before launch). Kernels record the first fault they see in the
/// backend's fault slot; [`crate::Backend::take_fault`] reads and clears it, so a device
/// reports value errors without a host round trip per kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// A NaN or infinity in an input or an intermediate (for example a row's log-sum-exp).
    NonFinite,
    /// A row whose L2 norm is zero (or below the smallest normal f32), so it has no direction.
    ZeroNormRow,
    /// A label outside `0..num_classes`.
    LabelOutOfRange,
}

/// A value fault recorded by a kernel: its kind, the row (or element) index where it was first
/// seen, and for labels the offending value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Row index for row-wise kernels, element index otherwise.
    pub index: usize,
    /// The offending label for [`FaultKind::LabelOutOfRange`], 0 otherwise.
    pub value: u32,
}

/// Every error the library returns. `what` names the argument or operation concerned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Error {
    /// A buffer or dimension does not have the size the operation needs.
    ShapeMismatch {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    /// An argument outside its allowed range (zero batch, negative temperature, ...).
    InvalidArgument {
        what: &'static str,
        reason: &'static str,
    },
    /// A label outside `0..num_classes`; `index` is its position in the label list.
    LabelOutOfRange {
        what: &'static str,
        index: usize,
        label: u32,
        num_classes: u32,
    },
    /// A NaN or infinity; `index` is the row (or element) where it was found.
    NonFinite { what: &'static str, index: usize },
    /// A feature row of zero norm that was to be normalised; `row` is its index.
    ZeroNormRow { what: &'static str, row: usize },
    /// The backend could not provide `requested` elements (an arena too small, a device full).
    OutOfMemory {
        what: &'static str,
        requested: usize,
        available: usize,
    },
    /// A device or driver failure; `code` is the driver's own error code where it has one.
    Device { what: &'static str, code: i64 },
}

pub type Result<T> = core::result::Result<T, Error>;

impl Error {
    /// The error a recorded kernel fault stands for, attributed to the operation `what`.
    pub fn from_fault(what: &'static str, fault: Fault, num_classes: u32) -> Error {
        match fault.kind {
            FaultKind::NonFinite => Error::NonFinite {
                what,
                index: fault.index,
            },
            FaultKind::ZeroNormRow => Error::ZeroNormRow {
                what,
                row: fault.index,
            },
            FaultKind::LabelOutOfRange => Error::LabelOutOfRange {
                what,
                index: fault.index,
                label: fault.value,
                num_classes,
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::ShapeMismatch {
                what,
                expected,
                actual,
            } => write!(f, "{what}: expected size {expected}, got {actual}"),
            Error::InvalidArgument { what, reason } => write!(f, "{what}: {reason}"),
            Error::LabelOutOfRange {
                what,
                index,
                label,
                num_classes,
            } => match num_classes.checked_sub(1) {
                Some(last) => write!(
                    f,
                    "{what}: label {label} at index {index} is outside the labels 0 to {last}"
                ),
                None => write!(
                    f,
                    "{what}: label {label} at index {index}, but there are no classes"
                ),
            },
            Error::NonFinite { what, index } => {
                write!(
                    f,
                    "{what}: non-finite value (NaN or infinity) at row {index}"
                )
            }
            Error::ZeroNormRow { what, row } => {
                write!(
                    f,
                    "{what}: row {row} has zero norm and cannot be normalised"
                )
            }
            Error::OutOfMemory {
                what,
                requested,
                available,
            } => write!(
                f,
                "{what}: out of memory: {requested} elements requested, {available} available"
            ),
            Error::Device { what, code } => write!(f, "{what}: device error (code {code})"),
        }
    }
}

impl core::error::Error for Error {}

/// Returns `ShapeMismatch` unless `actual >= expected`. Buffers may be larger than an operation
/// needs (a planned buffer serves several shapes); they may never be smaller.
pub fn check_len(what: &'static str, actual: usize, expected: usize) -> Result<()> {
    if actual < expected {
        Err(Error::ShapeMismatch {
            what,
            expected,
            actual,
        })
    } else {
        Ok(())
    }
}

/// `offset + len` as a checked end index into a buffer of `have` elements: `ShapeMismatch` when
/// it overflows or exceeds `have`.
pub fn check_range(what: &'static str, have: usize, offset: usize, len: usize) -> Result<usize> {
    let end = offset.checked_add(len).ok_or(Error::ShapeMismatch {
        what,
        expected: usize::MAX,
        actual: have,
    })?;
    check_len(what, have, end)?;
    Ok(end)
}

/// Returns `ShapeMismatch` unless `actual == expected`.
pub fn check_eq(what: &'static str, actual: usize, expected: usize) -> Result<()> {
    if actual != expected {
        Err(Error::ShapeMismatch {
            what,
            expected,
            actual,
        })
    } else {
        Ok(())
    }
}

/// Returns `InvalidArgument` with `reason` unless `ok`.
pub fn ensure(ok: bool, what: &'static str, reason: &'static str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument { what, reason })
    }
}
