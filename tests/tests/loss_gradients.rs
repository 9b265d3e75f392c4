//! Each loss's analytic gradient against central finite differences, in f64 on the reference
//! backend, over random shapes: B, d, K (partly filled queue), crops, and label draws that
//! include classes with a single sample and anchors with no other positive.

mod loss_support;

use dscl_core::backend::prelude::*;
use dscl_core::loss::{CrossEntropy, L2Normalize, PositiveWeighting, QueryGradient};
use dscl_core::reference::ReferenceBackend;
use loss_support::*;
use proptest::prelude::*;

const TAU: f64 = 0.5;
const STEP: f64 = 1e-5;
/// Central differences in f64 with h = 1e-5 are accurate to ~1e-9 here; 1e-6 leaves margin.
const TOL: f64 = 1e-6;

fn weightings() -> impl Strategy<Value = PositiveWeighting> {
    prop_oneof![
        Just(PositiveWeighting::SupCon),
        (0.0f64..10.0).prop_map(|beta| PositiveWeighting::Decoupled { beta }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn contrastive_gradient_matches_finite_differences(
        p in problems(),
        weighting in weightings(),
        through_contrast_set in any::<bool>(),
    ) {
        let backend = ReferenceBackend::<f64>::new();
        let mode = if through_contrast_set {
            QueryGradient::ThroughContrastSet
        } else {
            QueryGradient::AnchorOnly
        };
        let (_, grad) = p.contrastive(&backend, weighting, TAU, mode, usize::MAX).unwrap();
        let numeric = finite_differences(&p.queries, STEP, |q| {
            let mut probe = p.clone();
            probe.queries = q.to_vec();
            if mode == QueryGradient::AnchorOnly {
                return anchor_only_loss(&p, q, weighting);
            }
            probe.contrastive(&backend, weighting, TAU, mode, usize::MAX).unwrap().0
        });
        let err = max_rel_error(&grad, &numeric, 1e-3);
        prop_assert!(err < TOL, "relative error {err:e}\nanalytic {grad:?}\nnumeric {numeric:?}");
    }

    #[test]
    fn pbsd_gradient_matches_finite_differences(p in problems()) {
        let backend = ReferenceBackend::<f64>::new();
        let (_, grad) = p.pbsd(&backend, TAU, usize::MAX).unwrap();
        let numeric = finite_differences(&p.students, STEP, |s| {
            let mut probe = p.clone();
            probe.students = s.to_vec();
            probe.pbsd(&backend, TAU, usize::MAX).unwrap().0
        });
        let err = max_rel_error(&grad, &numeric, 1e-3);
        prop_assert!(err < TOL, "relative error {err:e}");
    }

    #[test]
    fn blocking_the_anchor_rows_changes_nothing(
        p in problems(),
        weighting in weightings(),
        block in 1usize..40,
    ) {
        // A block budget of `block` elements forces one anchor row (or a few) per block.
        let backend = ReferenceBackend::<f64>::new();
        let mode = QueryGradient::ThroughContrastSet;
        let whole = p.contrastive(&backend, weighting, TAU, mode, usize::MAX).unwrap();
        let blocked = p.contrastive(&backend, weighting, TAU, mode, block).unwrap();
        prop_assert!((whole.0 - blocked.0).abs() < 1e-12);
        // Blocking changes only the summation order: differences are rounding, relative to
        // the gradient's scale (a floor of 1e-3, as the finite-difference checks use), not to
        // entries that happen to be near zero.
        prop_assert!(max_rel_error(&blocked.1, &whole.1, 1e-3) < 1e-10);
        let whole = p.pbsd(&backend, TAU, usize::MAX).unwrap();
        let blocked = p.pbsd(&backend, TAU, block).unwrap();
        prop_assert!((whole.0 - blocked.0).abs() < 1e-12);
        // Blocking changes only the summation order: differences are rounding, relative to
        // the gradient's scale (a floor of 1e-3, as the finite-difference checks use), not to
        // entries that happen to be near zero.
        prop_assert!(max_rel_error(&blocked.1, &whole.1, 1e-3) < 1e-10);
    }

    #[test]
    fn masked_queue_entries_take_no_part(p in problems(), weighting in weightings()) {
        // Garbage in the unfilled slots must change nothing: same as a queue cut at `filled`.
        let backend = ReferenceBackend::<f64>::new();
        let mode = QueryGradient::ThroughContrastSet;
        let mut poisoned = p.clone();
        let filled_elems = p.queue_filled * p.shape.dim;
        for x in &mut poisoned.queue[filled_elems..] {
            *x = 1.0e3;
        }
        for y in &mut poisoned.queue_labels[p.queue_filled..] {
            *y = p.labels[0];
        }
        let mut cut = p.clone();
        cut.shape.queue_len = p.queue_filled;
        cut.queue.truncate(filled_elems);
        cut.queue_labels.truncate(p.queue_filled);
        let a = poisoned.contrastive(&backend, weighting, TAU, mode, usize::MAX).unwrap();
        let b = cut.contrastive(&backend, weighting, TAU, mode, usize::MAX).unwrap();
        prop_assert!((a.0 - b.0).abs() < 1e-12 && max_rel_error(&a.1, &b.1, 1e-9) < 1e-12);
        let a = poisoned.pbsd(&backend, TAU, usize::MAX).unwrap();
        let b = cut.pbsd(&backend, TAU, usize::MAX).unwrap();
        prop_assert!((a.0 - b.0).abs() < 1e-12 && max_rel_error(&a.1, &b.1, 1e-9) < 1e-12);
    }

    #[test]
    fn cross_entropy_gradient_matches_finite_differences(
        rows in 1usize..6,
        classes in 1usize..7,
        seed in proptest::collection::vec(-3.0f64..3.0, 36),
        label_seed in proptest::collection::vec(0u32..100, 6),
    ) {
        let backend = ReferenceBackend::<f64>::new();
        let logits: Vec<f64> = seed[..rows * classes].to_vec();
        let labels: Vec<u32> = label_seed[..rows].iter().map(|l| l % classes as u32).collect();
        let y = upload_labels(&backend, &labels).unwrap();
        let mut ce = CrossEntropy::new(&backend, rows, classes).unwrap();
        let mut eval = |x: &[f64]| -> (f64, Vec<f64>) {
            let mut buf = upload(&backend, x).unwrap();
            let loss = ce.forward_backward(&backend, &mut buf, &y).unwrap();
            (loss, download(&backend, &buf, x.len()).unwrap())
        };
        let (_, grad) = eval(&logits);
        let numeric = finite_differences(&logits, STEP, |x| eval(x).0);
        prop_assert!(max_rel_error(&grad, &numeric, 1e-3) < TOL);
    }

    #[test]
    fn gradient_through_normalisation_matches_finite_differences(
        p in problems(),
        weighting in weightings(),
        scale in 0.1f64..10.0,
    ) {
        // Raw embeddings v -> q = v / ||v|| -> loss: the chain a training step runs.
        let backend = ReferenceBackend::<f64>::new();
        let raw: Vec<f64> = p.queries.iter().map(|x| x * scale).collect();
        let mode = QueryGradient::ThroughContrastSet;
        let loss_of_raw = |v: &[f64]| -> (f64, Vec<f64>) {
            let mut norm = L2Normalize::new(&backend, p.shape.batch, p.shape.dim).unwrap();
            let x = upload(&backend, v).unwrap();
            let mut y = backend_alloc(&backend, v.len());
            norm.forward_checked(&backend, "queries", &x, &mut y).unwrap();
            let mut probe = p.clone();
            probe.queries = download(&backend, &y, v.len()).unwrap();
            let (loss, grad_q) =
                probe.contrastive(&backend, weighting, TAU, mode, usize::MAX).unwrap();
            let gq = upload(&backend, &grad_q).unwrap();
            let mut gv = backend_alloc(&backend, v.len());
            norm.backward(&backend, &y, &gq, &mut gv).unwrap();
            (loss, download(&backend, &gv, v.len()).unwrap())
        };
        let (_, grad) = loss_of_raw(&raw);
        let numeric = finite_differences(&raw, STEP, |v| loss_of_raw(v).0);
        let err = max_rel_error(&grad, &numeric, 1e-3 / scale);
        prop_assert!(err < TOL, "relative error {err:e}");
    }
}

fn backend_alloc(
    backend: &ReferenceBackend<f64>,
    len: usize,
) -> <ReferenceBackend<f64> as MemoryOps>::Buffer {
    backend.alloc(len).unwrap()
}

/// The loss when the anchors are `anchors` but the contrast set keeps `p.queries`: the
/// function whose gradient `QueryGradient::AnchorOnly` computes, evaluated on the host.
fn anchor_only_loss(p: &Problem, anchors: &[f64], weighting: PositiveWeighting) -> f64 {
    let d = p.shape.dim;
    (0..p.shape.batch)
        .map(|i| host_anchor_loss(p, i, &anchors[i * d..(i + 1) * d], weighting))
        .sum::<f64>()
        / p.shape.batch as f64
}

/// Anchor i's loss with anchor row `a` against the contrast set [p.queries; keys; queue].
fn host_anchor_loss(p: &Problem, i: usize, a: &[f64], weighting: PositiveWeighting) -> f64 {
    let d = p.shape.dim;
    let b = p.shape.batch;
    let rows: Vec<(&[f64], u32)> = (0..b)
        .map(|j| (&p.queries[j * d..(j + 1) * d], p.labels[j]))
        .chain((0..b).map(|j| (&p.keys[j * d..(j + 1) * d], p.labels[j])))
        .chain((0..p.queue_filled).map(|j| (&p.queue[j * d..(j + 1) * d], p.queue_labels[j])))
        .collect();
    let logits: Vec<f64> = rows
        .iter()
        .map(|(z, _)| a.iter().zip(*z).map(|(x, y)| x * y).sum::<f64>() / TAU)
        .collect();
    let max = logits
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .map(|(_, &s)| s)
        .fold(f64::NEG_INFINITY, f64::max);
    let lse = max
        + logits
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, &s)| (s - max).exp())
            .sum::<f64>()
            .ln();
    let positives: Vec<usize> = (0..rows.len())
        .filter(|&j| j != i && rows[j].1 == p.labels[i])
        .collect();
    let others = positives.len() - 1;
    let weight = |j: usize| match weighting {
        PositiveWeighting::SupCon => 1.0,
        PositiveWeighting::Decoupled { beta } => {
            if j == b + i {
                1.0
            } else {
                beta / others as f64
            }
        }
    };
    let wsum: f64 = positives.iter().map(|&j| weight(j)).sum();
    -positives
        .iter()
        .map(|&j| weight(j) * (logits[j] - lse))
        .sum::<f64>()
        / wsum
}
