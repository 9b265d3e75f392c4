//! The conformance suite on the reference backend itself: `ReferenceBackend<f32>` (the oracle's
//! code in device precision: checks that the suite's tolerances hold for an honest f32
//! implementation), and `ReferenceBackend<f64>` against itself (must agree to the last bit:
//! checks the suite's plumbing, masks and untouched-element handling).

use dscl_core::reference::ReferenceBackend;
use dscl_tests::conformance::Conformance;
use dscl_tests::harness::Config;

fn f32_suite() -> Conformance<fn() -> ReferenceBackend<f32>> {
    Conformance::new(ReferenceBackend::<f32>::new as fn() -> ReferenceBackend<f32>)
}

dscl_tests::conformance_tests!(Some(f32_suite()));

#[test]
fn f64_reference_against_itself() {
    let report =
        Conformance::with_config(ReferenceBackend::<f64>::new, Config::small_from_env()).run_all();
    // Same code, same inputs: every comparison must be exact.
    for fam in &report.families {
        for (kernel, stats) in &fam.kernels {
            assert_eq!(
                stats.worst_abs, 0.0,
                "{kernel}: the f64 reference differs from itself by {}",
                stats.worst_abs
            );
        }
    }
    println!("{report}");
}
