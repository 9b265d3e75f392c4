//! Shape errors: for every method, each buffer argument one element too short returns
//! `Err(ShapeMismatch)` without panicking; a sample of out-of-range arguments returns
//! `Err(InvalidArgument)`. Neither records a fault.
//!
//! Each family's checks sit in that family's conformance file (`shape_errors` there), beside
//! its numeric checks; this file is the table of them and what they share.

use crate::harness::{fail, Config, Ctx, Factory, FamilyReport, OrFail, Res};
use dscl_core::{Backend, Error};
use proptest::prelude::*;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Want {
    Shape,
    Invalid,
}

pub(crate) fn expect<T>(
    what: &str,
    want: Want,
    call: impl FnOnce() -> dscl_core::Result<T>,
) -> Res<()> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            fail(format!(
                "{what}: PANICKED ({msg}) instead of returning Err({want:?})"
            ))
        }
        Ok(Ok(_)) => fail(format!("{what}: returned Ok, expected Err({want:?})")),
        Ok(Err(e)) => match (want, e) {
            (Want::Shape, Error::ShapeMismatch { .. }) => Ok(()),
            (Want::Invalid, Error::InvalidArgument { .. }) => Ok(()),
            _ => fail(format!("{what}: returned Err({e:?}), expected {want:?}")),
        },
    }
}

/// The drawn part of a case: the transposes of the gemm checks.
#[derive(Clone, Debug)]
pub(crate) struct ShapeCase {
    pub(crate) trans_a: bool,
    pub(crate) trans_b: bool,
}

pub(crate) fn run<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    let strategy = (any::<bool>(), any::<bool>())
        .prop_map(|(trans_a, trans_b)| ShapeCase { trans_a, trans_b });
    // Four cases cover the transpose combinations of gemm; the rest is deterministic.
    let cfg = cfg.clone().with_cases_factor(1.0);
    case_fn!(Runner, ShapeCase, run_case);
    crate::harness::run_family("shape_errors", &cfg, make, 4, strategy, Runner)
}

/// One family's checks.
type FamilyChecks<B> = fn(&Ctx<'_, B>, &ShapeCase) -> Res<()>;

/// Every family's shape-error checks, in the order of the `Backend` trait.
fn families<B: Backend>() -> [(&'static str, FamilyChecks<B>); 10] {
    use super::*;
    [
        ("memory", memory::shape_errors),
        ("elementwise", elementwise::shape_errors),
        ("dense", dense::shape_errors),
        ("conv", conv::shape_errors),
        ("batch_norm", batch_norm::shape_errors),
        ("activations", activations::shape_errors),
        ("roi_align", roi_align::shape_errors),
        ("rows", rows::shape_errors),
        ("losses", losses::shape_errors),
        ("optim", optim::shape_errors),
    ]
}

fn run_case<B: Backend>(ctx: &Ctx<'_, B>, case: &ShapeCase) -> Res<()> {
    // Each check's message names its method, so the family needs no mention.
    for (_family, checks) in families::<B>() {
        checks(ctx, case)?;
    }
    ctx.no_faults("shape_errors", case)
}

/// What every family's checks use: the backend, and allocators of zeroed buffers of `n`
/// elements (values, indices, host values).
#[allow(clippy::type_complexity)]
pub(crate) fn shape_tools<'a, B: Backend>(
    ctx: &'a Ctx<'_, B>,
) -> (
    &'a B,
    impl Fn(usize) -> Res<B::Buffer> + 'a,
    impl Fn(usize) -> Res<B::IndexBuffer> + 'a,
    impl Fn(usize) -> Vec<B::Elem>,
) {
    let be = &ctx.be;
    (
        be,
        move |n| be.alloc(n).or_fail("alloc"),
        move |n| be.alloc_index(n).or_fail("alloc_index"),
        |n| vec![<B::Elem as num_traits::Zero>::zero(); n],
    )
}
