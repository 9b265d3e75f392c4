//! Bad input to the losses returns an error that says what and where; nothing panics.
//! Each case runs on the reference backend and on the CPU backend.

mod loss_support;

use dscl_core::loss::{
    ContrastiveShape, CrossEntropy, L2Normalize, PositiveWeighting, QueryGradient,
    SupervisedContrastive,
};
use dscl_core::reference::ReferenceBackend;
use dscl_core::{Backend, Error};
use dscl_cpu::CpuBackend;
use loss_support::*;

fn problem() -> Problem {
    let (batch, dim, queue_len) = (4, 3, 6);
    let rows = |n: usize, phase: f64| {
        normalized_rows(
            (0..n * dim)
                .map(|e| ((e as f64) * 0.7 + phase).sin() + 0.1)
                .collect(),
            dim,
        )
    };
    Problem {
        shape: ContrastiveShape {
            batch,
            dim,
            queue_len,
            num_classes: 3,
        },
        queue_filled: queue_len,
        crops: 2,
        queries: rows(batch, 0.0),
        keys: rows(batch, 1.0),
        queue: rows(queue_len, 2.0),
        labels: vec![0, 1, 0, 2],
        queue_labels: vec![0, 0, 1, 2, 2, 1],
        teachers: rows(2 * batch, 3.0),
        students: rows(2 * batch, 4.0),
    }
}

const DSCL: PositiveWeighting = PositiveWeighting::Decoupled { beta: 8.0 };
const MODE: QueryGradient = QueryGradient::ThroughContrastSet;

fn dscl_error<B: Backend>(backend: &B, p: &Problem) -> Error {
    p.contrastive(backend, DSCL, 0.07, MODE, usize::MAX)
        .unwrap_err()
}

fn each_backend(check: impl Fn(&dyn Fn(&Problem) -> Error, &dyn Fn(&Problem) -> Error)) {
    let reference = ReferenceBackend::<f64>::new();
    let cpu = CpuBackend::new();
    check(&|p| dscl_error(&reference, p), &|p| {
        p.pbsd(&reference, 0.07, usize::MAX).unwrap_err()
    });
    check(&|p| dscl_error(&cpu, p), &|p| {
        p.pbsd(&cpu, 0.07, usize::MAX).unwrap_err()
    });
}

#[test]
fn the_valid_problem_runs() {
    let p = problem();
    let (loss, grad) = p
        .contrastive(&CpuBackend::new(), DSCL, 0.07, MODE, usize::MAX)
        .unwrap();
    assert!(loss.is_finite() && grad.iter().all(|g| g.is_finite()));
}

#[test]
fn mismatched_shapes_are_named() {
    each_backend(|dscl, pbsd| {
        let mut p = problem();
        p.keys.truncate(p.keys.len() - 1);
        assert!(matches!(
            dscl(&p),
            Error::ShapeMismatch {
                what: "keys",
                expected: 12,
                actual: 11
            }
        ));
        let mut p = problem();
        p.students.truncate(5);
        assert!(matches!(
            pbsd(&p),
            Error::ShapeMismatch {
                what: "students",
                ..
            }
        ));
        let mut p = problem();
        p.labels.pop();
        assert!(matches!(
            dscl(&p),
            Error::ShapeMismatch { what: "labels", .. }
        ));
    });
}

#[test]
fn labels_out_of_range_are_named_with_their_index() {
    each_backend(|dscl, _| {
        let mut p = problem();
        p.labels[2] = 7;
        assert_eq!(
            dscl(&p),
            Error::LabelOutOfRange {
                what: "labels",
                index: 2,
                label: 7,
                num_classes: 3
            }
        );
        let mut p = problem();
        p.queue_labels[4] = 3;
        assert_eq!(
            dscl(&p),
            Error::LabelOutOfRange {
                what: "queue_labels",
                index: 4,
                label: 3,
                num_classes: 3
            }
        );
    });
}

#[test]
fn non_finite_features_are_traced_to_their_input_row() {
    each_backend(|dscl, pbsd| {
        let mut p = problem();
        p.keys[3 * 2 + 1] = f64::NAN;
        assert_eq!(
            dscl(&p),
            Error::NonFinite {
                what: "keys",
                index: 2
            }
        );
        let mut p = problem();
        p.queue[5 * 3] = f64::INFINITY;
        assert_eq!(
            dscl(&p),
            Error::NonFinite {
                what: "queue",
                index: 5
            }
        );
        let mut p = problem();
        p.queries[0] = f64::NEG_INFINITY;
        assert_eq!(
            dscl(&p),
            Error::NonFinite {
                what: "queries",
                index: 0
            }
        );
        let mut p = problem();
        p.students[3 * 7] = f64::NAN;
        assert_eq!(
            pbsd(&p),
            Error::NonFinite {
                what: "students",
                index: 7
            }
        );
        let mut p = problem();
        p.teachers[0] = f64::NAN;
        assert_eq!(
            pbsd(&p),
            Error::NonFinite {
                what: "teachers",
                index: 0
            }
        );
    });
}

#[test]
fn a_queue_that_does_not_fit_is_refused() {
    each_backend(|dscl, pbsd| {
        let mut p = problem();
        p.queue_filled = p.shape.queue_len + 1;
        assert!(matches!(
            dscl(&p),
            Error::InvalidArgument {
                what: "queue_filled",
                ..
            }
        ));
        assert!(matches!(
            pbsd(&p),
            Error::InvalidArgument {
                what: "queue_filled",
                ..
            }
        ));
    });
    let shape = ContrastiveShape {
        batch: 4,
        dim: 3,
        queue_len: usize::MAX - 2,
        num_classes: 3,
    };
    let reference = ReferenceBackend::<f64>::new();
    let err = SupervisedContrastive::dscl(&reference, shape, 0.07, 8.0)
        .err()
        .unwrap();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            what: "queue length",
            ..
        }
    ));
}

#[test]
fn bad_hyperparameters_are_refused() {
    let reference = ReferenceBackend::<f64>::new();
    let shape = problem().shape;
    for tau in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        let err = SupervisedContrastive::dscl(&reference, shape, tau, 8.0)
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                Error::InvalidArgument {
                    what: "temperature",
                    ..
                }
            ),
            "{tau}"
        );
    }
    let err = SupervisedContrastive::dscl(&reference, shape, 0.07, -1.0)
        .err()
        .unwrap();
    assert!(matches!(err, Error::InvalidArgument { what: "beta", .. }));
    let zero_batch = ContrastiveShape { batch: 0, ..shape };
    let err = SupervisedContrastive::supcon(&reference, zero_batch, 0.07)
        .err()
        .unwrap();
    assert!(matches!(err, Error::InvalidArgument { what: "batch", .. }));
}

fn zero_row_error<B: Backend>(backend: &B) -> Error {
    let mut x = problem().queries;
    x[3..6].fill(0.0);
    let mut norm = L2Normalize::new(backend, 4, 3).unwrap();
    let input = upload(backend, &x).unwrap();
    let mut out = backend.alloc(12).unwrap();
    norm.forward_checked(backend, "queries", &input, &mut out)
        .unwrap_err()
}

#[test]
fn zero_norm_rows_are_named() {
    let expected = Error::ZeroNormRow {
        what: "queries",
        row: 1,
    };
    assert_eq!(zero_row_error(&ReferenceBackend::<f64>::new()), expected);
    assert_eq!(zero_row_error(&CpuBackend::new()), expected);
}

fn cross_entropy_error<B: Backend>(backend: &B, labels: &[u32], logits: &[f64]) -> Error {
    let mut ce = CrossEntropy::new(backend, 2, 3).unwrap();
    let mut x = upload(backend, logits).unwrap();
    let y = upload_labels(backend, labels).unwrap();
    ce.forward_backward(backend, &mut x, &y).unwrap_err()
}

#[test]
fn cross_entropy_names_bad_labels_and_values() {
    let good = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
    let mut nan = good;
    nan[4] = f64::NAN;
    for (label_err, nan_err) in [
        (
            cross_entropy_error(&ReferenceBackend::<f64>::new(), &[0, 3], &good),
            cross_entropy_error(&ReferenceBackend::<f64>::new(), &[0, 1], &nan),
        ),
        (
            cross_entropy_error(&CpuBackend::new(), &[0, 3], &good),
            cross_entropy_error(&CpuBackend::new(), &[0, 1], &nan),
        ),
    ] {
        assert_eq!(
            label_err,
            Error::LabelOutOfRange {
                what: "labels",
                index: 1,
                label: 3,
                num_classes: 3
            }
        );
        assert_eq!(
            nan_err,
            Error::NonFinite {
                what: "logits",
                index: 1
            }
        );
    }
}

#[test]
fn errors_read_as_sentences() {
    let e = Error::LabelOutOfRange {
        what: "queue_labels",
        index: 4,
        label: 3,
        num_classes: 3,
    };
    assert_eq!(
        e.to_string(),
        "queue_labels: label 3 at index 4 is outside the labels 0 to 2"
    );
    let e = Error::NonFinite {
        what: "keys",
        index: 2,
    };
    assert_eq!(
        e.to_string(),
        "keys: non-finite value (NaN or infinity) at row 2"
    );
}

/// Finite inputs can still overflow where no kernel looks: a beta so large that the positive
/// weights' sum is infinite, or a gradient `p z / tau` beyond the element type while every
/// logit is moderate. Both were `Ok` with a NaN loss or an infinite gradient.
#[test]
fn overflowing_loss_or_gradient_is_an_error() {
    let p = problem();
    let huge_beta = PositiveWeighting::Decoupled { beta: f64::MAX };
    for err in [
        p.contrastive(&ReferenceBackend::<f64>::new(), huge_beta, 0.07, MODE, 7)
            .unwrap_err(),
        p.contrastive(&CpuBackend::new(), huge_beta, 0.07, MODE, 7)
            .unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    what: "dscl loss",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    // q . key = 1e-37 * 1e36 and q . queue = 1 * 0.1 give both logits 0.1 / tau = 100, so
    // p = 1/2 each and the loss is ln 2; but the gradient is -(1/2) 1e36 / tau = -5e38 in the
    // first component, past f32's largest value.
    let overflow = Problem {
        shape: ContrastiveShape {
            batch: 1,
            dim: 2,
            queue_len: 1,
            num_classes: 2,
        },
        queue_filled: 1,
        crops: 1,
        queries: vec![1e-37, 1.0],
        keys: vec![1e36, 0.0],
        queue: vec![0.0, 0.1],
        labels: vec![0],
        queue_labels: vec![1],
        teachers: vec![0.0, 1.0],
        students: vec![0.0, 1.0],
    };
    let expected = Error::NonFinite {
        what: "query gradient",
        index: 0,
    };
    let tau = 1e-3;
    assert_eq!(
        overflow
            .contrastive(&ReferenceBackend::<f32>::new(), DSCL, tau, MODE, 7)
            .unwrap_err(),
        expected
    );
    assert_eq!(
        overflow
            .contrastive(&CpuBackend::new(), DSCL, tau, MODE, 7)
            .unwrap_err(),
        expected
    );
    let (loss, grad) = overflow
        .contrastive(&ReferenceBackend::<f64>::new(), DSCL, tau, MODE, 7)
        .unwrap();
    assert!((loss - std::f64::consts::LN_2).abs() < 1e-9, "{loss}");
    assert!(
        grad[0] < -4e38,
        "in f64 the same gradient is finite: {grad:?}"
    );
}
