//! The floating-point element type a backend computes in.

use core::fmt::Debug;
use num_traits::Float;

/// f32 for every device backend; f64 for the reference backend when it checks independent
/// float64 values or finite differences.
pub trait Element: Float + Default + Debug + Send + Sync + 'static {
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
}

impl Element for f32 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Element for f64 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}
