//! The losses stay finite at the numerical extremes: temperature down to 0.01 (logits up to
//! 1/tau = 100, whose exponential overflows f32 unless the log-sum-exp subtracts the row max)
//! and cosine similarities of exactly +1 and -1 (keys equal to the queries, queue rows and PBSD
//! crops equal to the queries or their negation). Checked in f32 on the CPU backend, and in f64
//! on the reference, for SupCon, DSCL and PBSD, whole and blocked.

mod loss_support;

use dscl_core::backend::prelude::*;
use dscl_core::loss::{PositiveWeighting, QueryGradient};
use dscl_core::reference::ReferenceBackend;
use dscl_cpu::CpuBackend;
use loss_support::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

fn weightings() -> impl Strategy<Value = PositiveWeighting> {
    prop_oneof![
        Just(PositiveWeighting::SupCon),
        (0.0f64..100.0).prop_map(|beta| PositiveWeighting::Decoupled { beta }),
    ]
}

/// `p` with every similarity at +1 or -1: keys are the queries, queue row r is query
/// `r % batch` (negated when `negate_queue`), PBSD teachers and students are copies of the
/// queries (students negated when `negate_queue`).
fn extreme(mut p: Problem, negate_queue: bool) -> Problem {
    let (b, d) = (p.shape.batch, p.shape.dim);
    let sign = if negate_queue { -1.0 } else { 1.0 };
    let row = |i: usize| p.queries[(i % b) * d..(i % b + 1) * d].to_vec();
    p.keys = p.queries.clone();
    p.queue = (0..p.shape.queue_len)
        .flat_map(|r| row(r).into_iter().map(move |x| sign * x))
        .collect();
    p.teachers = (0..p.crops * b).flat_map(row).collect();
    p.students = (0..p.crops * b)
        .flat_map(|i| row(i).into_iter().map(move |x| sign * x))
        .collect();
    p
}

fn all_finite(what: &str, loss: f64, grad: &[f64]) -> Result<(), TestCaseError> {
    prop_assert!(loss.is_finite(), "{what}: loss {loss}");
    prop_assert!(
        grad.iter().all(|g| g.is_finite()),
        "{what}: non-finite gradient {grad:?}"
    );
    Ok(())
}

fn check_on<B: Backend>(
    backend: &B,
    p: &Problem,
    weighting: PositiveWeighting,
    tau: f64,
) -> Result<(), TestCaseError> {
    let name = backend.device_name().to_string();
    for block in [usize::MAX, 7] {
        for mode in [QueryGradient::ThroughContrastSet, QueryGradient::AnchorOnly] {
            let (loss, grad) = p
                .contrastive(backend, weighting, tau, mode, block)
                .map_err(|e| TestCaseError::fail(format!("{name}: contrastive: {e}")))?;
            all_finite(&format!("{name} contrastive tau {tau}"), loss, &grad)?;
        }
        let (loss, grad) = p
            .pbsd(backend, tau, block)
            .map_err(|e| TestCaseError::fail(format!("{name}: pbsd: {e}")))?;
        all_finite(&format!("{name} pbsd tau {tau}"), loss, &grad)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn losses_stay_finite_at_small_temperature_and_unit_similarities(
        p in problems(),
        log_tau in (0.01f64).ln()..=0.0,
        weighting in weightings(),
        negate_queue in any::<bool>(),
        at_extreme in any::<bool>(),
    ) {
        let p = if at_extreme { extreme(p, negate_queue) } else { p };
        let tau = log_tau.exp().max(0.01);
        check_on(&CpuBackend::new(), &p, weighting, tau)?;
        check_on(&ReferenceBackend::<f64>::new(), &p, weighting, tau)?;
    }
}

/// The boundary itself, not just near it: tau = 0.01 exactly, every similarity +-1.
#[test]
fn tau_of_one_hundredth_with_identical_and_opposite_rows() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for negate_queue in [false, true] {
        let p = problems().new_tree(&mut runner).unwrap().current();
        let p = extreme(p, negate_queue);
        for weighting in [
            PositiveWeighting::SupCon,
            PositiveWeighting::Decoupled { beta: 8.0 },
        ] {
            check_on(&CpuBackend::new(), &p, weighting, 0.01).unwrap();
            check_on(&ReferenceBackend::<f64>::new(), &p, weighting, 0.01).unwrap();
        }
    }
}
