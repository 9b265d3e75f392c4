//! The paper's claims as properties (Xuan & Zhang 2024, section 3):
//! - at the optimum, SupCon drives p(augmented view) to 1/|P(i)|, which depends on how many
//!   positives the anchor's class has, while DSCL drives it to alpha = 1/(1+beta) whatever the
//!   class size;
//! - at initialisation (uniform p), the ratio of the pull on the augmented view to the total
//!   pull on the other positives is 1/(|P(i)|-1) under SupCon and 1/beta under DSCL.
//!
//! Both are measured through the `contrastive_rows` kernel of the reference backend, the
//! same code every backend is tested against.

use dscl_core::backend::prelude::*;
use dscl_core::desc::{ContrastiveRowsDesc, PositiveWeighting};
use dscl_core::reference::ReferenceBackend;
use proptest::prelude::*;

/// One anchor (i = 0) in a batch of B = 1: column 0 is its self, column 1 its augmented view,
/// then `others` more positives of its class and `negatives` of other classes (queue columns).
struct Row {
    backend: ReferenceBackend<f64>,
    desc: ContrastiveRowsDesc,
    labels: <ReferenceBackend<f64> as MemoryOps>::IndexBuffer,
}

impl Row {
    fn new(others: usize, negatives: usize, weighting: PositiveWeighting) -> Row {
        let backend = ReferenceBackend::<f64>::new();
        let cols = 2 + others + negatives;
        let labels: Vec<u32> = (0..cols).map(|j| u32::from(j >= 2 + others)).collect();
        let mut buf = backend.alloc_index(cols).unwrap();
        backend.upload_index(&mut buf, 0, &labels).unwrap();
        let desc = ContrastiveRowsDesc {
            rows: 1,
            row_offset: 0,
            batch: 1,
            cols,
            valid_cols: cols,
            num_classes: 2,
            weighting,
            grad_scale: 1.0,
        };
        Row {
            backend,
            desc,
            labels: buf,
        }
    }

    /// dL/ds for the logits `s` (column 0, the self, is ignored by the loss).
    fn gradient(&self, s: &[f64]) -> Vec<f64> {
        let mut logits = self.backend.alloc(s.len()).unwrap();
        self.backend.upload(&mut logits, 0, s).unwrap();
        let mut loss = self.backend.alloc(1).unwrap();
        self.backend
            .contrastive_rows(&self.desc, &mut logits, &self.labels, &mut loss)
            .unwrap();
        assert_eq!(self.backend.take_fault().unwrap(), None);
        let mut g = vec![0.0; s.len()];
        self.backend.download(&logits, 0, &mut g).unwrap();
        g
    }
}

fn softmax_excluding_self(s: &[f64]) -> Vec<f64> {
    let max = s[1..].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = s[1..].iter().map(|x| (x - max).exp()).sum();
    std::iter::once(0.0)
        .chain(s[1..].iter().map(|x| (x - max).exp() / z))
        .collect()
}

/// Gradient descent on the positives' logits, from `start`, with the negatives held at -40 (the
/// optimum puts no mass on them; holding them there isolates the positives' split). Returns
/// p(augmented view) / p(all positives) once the gradient has vanished.
fn optimal_view_share(
    others: usize,
    negatives: usize,
    weighting: PositiveWeighting,
    start: &[f64],
) -> f64 {
    let row = Row::new(others, negatives, weighting);
    let positives = 1 + others;
    let mut s: Vec<f64> = std::iter::once(0.0)
        .chain(start.iter().cycle().take(positives).cloned())
        .chain(std::iter::repeat_n(-40.0, negatives))
        .collect();
    for _ in 0..3000 {
        let g = row.gradient(&s);
        for (x, dx) in s.iter_mut().zip(&g).skip(1).take(positives) {
            *x -= 1.0 * dx;
        }
    }
    let g = row.gradient(&s);
    assert!(
        g[1..=positives].iter().all(|x| x.abs() < 1e-9),
        "not converged: {g:?}"
    );
    let p = softmax_excluding_self(&s);
    p[1] / p[1..=positives].iter().sum::<f64>()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn dscl_optimum_does_not_depend_on_class_size(
        others in 1usize..12,
        negatives in 1usize..8,
        beta in 0.5f64..12.0,
        start in proptest::collection::vec(-3.0f64..3.0, 1..13),
    ) {
        let alpha = 1.0 / (1.0 + beta);
        let share =
            optimal_view_share(others, negatives, PositiveWeighting::Decoupled { beta }, &start);
        prop_assert!((share - alpha).abs() < 1e-6, "share {share} vs alpha {alpha}");
    }

    #[test]
    fn supcon_optimum_depends_on_class_size(
        others in 1usize..12,
        negatives in 1usize..8,
        start in proptest::collection::vec(-3.0f64..3.0, 1..13),
    ) {
        let share = optimal_view_share(others, negatives, PositiveWeighting::SupCon, &start);
        let expected = 1.0 / (1 + others) as f64;
        prop_assert!((share - expected).abs() < 1e-6, "share {share} vs 1/|P| {expected}");
    }

    #[test]
    fn pull_ratio_at_initialisation(
        others in 1usize..20,
        negatives in 0usize..20,
        beta in 0.5f64..12.0,
    ) {
        // Uniform p: every gradient is p - w/W, so the pulls are w/W = p - g.
        let s = vec![0.0; 2 + others + negatives];
        let p = 1.0 / (1 + others + negatives) as f64;
        let pull_ratio = |weighting| {
            let g = Row::new(others, negatives, weighting).gradient(&s);
            let view = p - g[1];
            let rest: f64 = g[2..2 + others].iter().map(|gj| p - gj).sum();
            view / rest
        };
        let supcon = pull_ratio(PositiveWeighting::SupCon);
        prop_assert!((supcon - 1.0 / others as f64).abs() < 1e-12);
        let dscl = pull_ratio(PositiveWeighting::Decoupled { beta });
        prop_assert!((dscl - 1.0 / beta).abs() < 1e-12);
    }
}
