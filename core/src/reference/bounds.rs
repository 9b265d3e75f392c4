//! Overflow-safe size arithmetic for kernels whose sizes are plain arguments rather than a
//! descriptor, so a hostile length is an error, never a panic.

use crate::error::{check_len, Error, Result};
use core::ops::Range;

/// `offset..offset + len`, after checking that a buffer of `buffer_len` elements holds it.
pub fn span(
    what: &'static str,
    buffer_len: usize,
    offset: usize,
    len: usize,
) -> Result<Range<usize>> {
    let end = offset.checked_add(len).ok_or(Error::InvalidArgument {
        what,
        reason: "offset + length overflows usize",
    })?;
    check_len(what, buffer_len, end)?;
    Ok(offset..end)
}

/// The product of `dims`, or `InvalidArgument` when it overflows.
pub fn product(what: &'static str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or(Error::InvalidArgument {
            what,
            reason: "size overflows usize",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_rejects_short_buffers_and_overflow() {
        assert_eq!(span("x", 10, 2, 8), Ok(2..10));
        assert!(matches!(
            span("x", 10, 3, 8),
            Err(Error::ShapeMismatch {
                expected: 11,
                actual: 10,
                ..
            })
        ));
        assert!(matches!(
            span("x", 10, usize::MAX, 2),
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[test]
    fn product_detects_overflow() {
        assert_eq!(product("p", &[2, 3, 4]), Ok(24));
        assert_eq!(product("p", &[]), Ok(1));
        assert!(product("p", &[usize::MAX, 2]).is_err());
    }
}
