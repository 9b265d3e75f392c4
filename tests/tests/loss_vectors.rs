//! The losses against independent values: PyTorch float64 outputs in
//! tests/data/dscl_vectors_small.json (copied from the project's shared vectors).

use dscl_core::reference::ReferenceBackend;
use dscl_cpu::CpuBackend;
use dscl_runtime::io::vectors::Vectors;
use dscl_runtime::verify::{compare, evaluate};

const SMALL: &str = include_str!("../data/dscl_vectors_small.json");

fn check(outputs: &dscl_runtime::io::vectors::Outputs, expected: &Vectors, tol: f64) {
    let rows = compare(outputs, &expected.expected, tol);
    assert_eq!(rows.len(), 11, "every output is compared");
    for r in &rows {
        println!(
            "{:<28} abs {:.3e} rel {:.3e}",
            r.name, r.max_abs_error, r.max_rel_error
        );
    }
    let failed: Vec<_> = rows.iter().filter(|r| !r.within_tolerance).collect();
    assert!(failed.is_empty(), "outputs beyond {tol:e}: {failed:#?}");
}

#[test]
fn reference_path_reproduces_pytorch_float64_to_1e9() {
    let v = Vectors::from_json(SMALL).unwrap();
    let got = evaluate(&ReferenceBackend::<f64>::new(), &v).unwrap();
    check(&got, &v, 1e-9);
    // The headline numbers, stated outright.
    assert!((got.dscl_loss - 7.534316699220439).abs() < 1e-9 * 7.6);
    assert!((got.supcon_loss - 7.593769363696119).abs() < 1e-9 * 7.6);
    assert!((got.pbsd_loss - 5.419331138241235).abs() < 1e-9 * 5.5);
}

#[test]
fn cpu_backend_reproduces_pytorch_float64_to_1e4_in_f32() {
    let v = Vectors::from_json(SMALL).unwrap();
    let got = evaluate(&CpuBackend::new(), &v).unwrap();
    check(&got, &v, 1e-4);
}

#[test]
fn a_wrong_implementation_is_caught() {
    // The comparison must fail when the math differs: evaluate with beta perturbed.
    let mut v = Vectors::from_json(SMALL).unwrap();
    let expected = v.clone();
    v.beta = 7.9;
    let got = evaluate(&ReferenceBackend::<f64>::new(), &v).unwrap();
    let rows = compare(&got, &expected.expected, 1e-4);
    assert!(rows
        .iter()
        .any(|r| r.name == "dscl_loss" && !r.within_tolerance));
    assert!(rows
        .iter()
        .any(|r| r.name == "supcon_loss" && r.within_tolerance));
}
