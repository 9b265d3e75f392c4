//! dscl's conformance suite: every kernel of a [`dscl_core::Backend`] against the f64 oracle
//! [`dscl_core::reference::ReferenceBackend<f64>`], on random shapes (proptest), with stated
//! tolerances.
//!
//! A backend crate runs the whole suite with one call:
//!
//! ```ignore
//! let report = dscl_tests::conformance::run_all(|| CpuBackend::new());
//! println!("{report}");
//! ```
//!
//! The factory closure gives every random case a fresh backend. Each kernel family also has its
//! own entry point ([`conformance::Conformance::gemm`], ...) so a test binary can split the
//! suite into one `#[test]` per family. A failure panics with the kernel, the (shrunk) shape,
//! the worst element with its coordinates, expected vs got and the tolerance, and the seed to
//! replay it (`DSCL_CONFORMANCE_SEED`). `DSCL_CONFORMANCE_CASES` multiplies every family's
//! case count.
//!
//! Inputs are generated in f32 (what a device holds), converted to the backend's element type
//! and to f64 for the oracle, so both see identical values. Tolerances: [`tol`].

// The checks walk several parallel arrays (inputs, outputs, tolerances) by index.
#![allow(clippy::needless_range_loop)]

/// Declares a unit struct `$name` implementing `CaseFn<$case>` by calling `$f(ctx, &value)`.
macro_rules! case_fn {
    ($name:ident, $case:ty, $f:ident) => {
        struct $name;
        impl $crate::harness::CaseFn<$case> for $name {
            fn run<B: dscl_core::Backend>(
                &self,
                ctx: &$crate::harness::Ctx<'_, B>,
                value: $case,
            ) -> $crate::harness::Res<()> {
                $f(ctx, &value)
            }
        }
    };
}

pub mod compare;
pub mod conformance;
pub mod gen;
pub mod harness;
pub mod threads;
pub mod tol;
