//! The floating-point element type a backend computes in.

use core::fmt::Debug;
use num_traits::Float;

/// f32 for every device backend; f64 for the reference backend when it checks independent
/// float64 values or finite differences.
///
/// The conversions are named apart from `num_traits`' `to_f64` (which returns an `Option` and
/// wins method resolution on a `&T`), so `x.widen()` is always the plain conversion.
pub trait Element: Float + Default + Debug + Send + Sync + 'static {
    /// Rounds an f64 to the element type.
    fn from_f64(v: f64) -> Self;
    /// Converts exactly to f64.
    fn widen(self) -> f64;
}

impl Element for f32 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn widen(self) -> f64 {
        self as f64
    }
}

impl Element for f64 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn widen(self) -> f64 {
        self
    }
}
