//! Shared set-up of the loss tests: run a loss on host data through any backend.
#![allow(dead_code)]

pub use dscl_core::loss::ContrastiveShape;
use proptest::prelude::*;

/// The core's host-side problem, under the name these tests have always used.
pub use dscl_core::loss::host::HostProblem as Problem;
// Each test binary that includes this module uses some of these.
#[allow(unused_imports)]
pub use dscl_core::loss::host::{
    download_values as download, upload_labels, upload_values as upload,
};

pub fn normalized_rows(values: Vec<f64>, dim: usize) -> Vec<f64> {
    values
        .chunks(dim)
        .flat_map(|row| {
            let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            row.iter().map(move |x| x / norm).collect::<Vec<_>>()
        })
        .collect()
}

fn unit_rows(rows: usize, dim: usize) -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(-1.0f64..1.0, rows * dim)
        .prop_map(move |v| normalized_rows(v.iter().map(|x| x + 1e-3).collect(), dim))
}

/// Random problems: B in 1..=6, d in 1..=5, K in 0..=8 (partly filled), 1..=4 classes with
/// imbalanced label draws, so classes with one sample and anchors with no other positive occur.
pub fn problems() -> impl Strategy<Value = Problem> {
    (1usize..=6, 1usize..=5, 0usize..=8, 1usize..=3, 1u32..=4)
        .prop_flat_map(|(batch, dim, queue_len, crops, num_classes)| {
            (
                Just((batch, dim, queue_len, crops, num_classes)),
                0..=queue_len,
                unit_rows(batch, dim),
                unit_rows(batch, dim),
                unit_rows(queue_len, dim),
                proptest::collection::vec(0..num_classes * num_classes, batch),
                proptest::collection::vec(0..num_classes * num_classes, queue_len),
                unit_rows(crops * batch, dim),
                unit_rows(crops * batch, dim),
            )
        })
        .prop_map(
            |((batch, dim, queue_len, crops, num_classes), queue_filled, q, k, u, y, yq, t, s)| {
                // sqrt of a uniform draw over 0..n^2 gives class c probability (2c+1)/n^2: imbalanced.
                let skew = |v: Vec<u32>| -> Vec<u32> {
                    v.into_iter()
                        .map(|x| (x as f64).sqrt() as u32 % num_classes)
                        .collect()
                };
                Problem {
                    shape: ContrastiveShape {
                        batch,
                        dim,
                        queue_len,
                        num_classes,
                    },
                    queue_filled,
                    crops,
                    queries: q,
                    keys: k,
                    queue: u,
                    labels: skew(y),
                    queue_labels: skew(yq),
                    teachers: t,
                    students: s,
                }
            },
        )
}

/// Central finite differences of `f` at `x`, step `h`.
pub fn finite_differences(x: &[f64], h: f64, mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut probe = x.to_vec();
    (0..x.len())
        .map(|e| {
            probe[e] = x[e] + h;
            let up = f(&probe);
            probe[e] = x[e] - h;
            let down = f(&probe);
            probe[e] = x[e];
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// Largest |a - b| / max(|b|, floor).
pub fn max_rel_error(a: &[f64], b: &[f64], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(floor))
        .fold(0.0, f64::max)
}
