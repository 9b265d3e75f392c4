//! Long-tailed evaluation: top-1 accuracy overall and on Many / Medium / Few classes (by the
//! number of training images of each class), and per class; top-5 overall. And the record of
//! stage 2's per-epoch evaluations (`--eval-every-epoch`).

use anyhow::{bail, Result};
use serde::Serialize;

/// Class-size thresholds of the splits: Many has more than `many` training images, Few fewer
/// than `few`, Medium the rest. The literature's ImageNet-LT convention is 100 / 20.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitThresholds {
    pub many: usize,
    pub few: usize,
}

impl Default for SplitThresholds {
    fn default() -> Self {
        SplitThresholds { many: 100, few: 20 }
    }
}

impl std::str::FromStr for SplitThresholds {
    type Err = String;
    /// `MANY,FEW`, for example `100,20`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (a, b) = s
            .split_once(',')
            .ok_or_else(|| format!("expected MANY,FEW (for example 100,20), got `{s}`"))?;
        let many = a.trim().parse().map_err(|e| format!("MANY `{a}`: {e}"))?;
        let few = b.trim().parse().map_err(|e| format!("FEW `{b}`: {e}"))?;
        if few > many {
            return Err(format!("FEW ({few}) must not exceed MANY ({many})"));
        }
        Ok(SplitThresholds { many, few })
    }
}

/// What `metrics.json` holds. Accuracies are percentages; a split with no test image is null.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    pub top1: f64,
    /// The label among the 5 highest scores (every image counts with 5 classes or fewer), as
    /// the official code's `accuracy(output, target, topk=(1, 5))`.
    pub top5: f64,
    pub many: Option<f64>,
    pub medium: Option<f64>,
    pub few: Option<f64>,
    pub per_class: Vec<Option<f64>>,
    pub class_counts: Vec<usize>,
    pub test_images: usize,
    pub split_thresholds: [usize; 2],
}

/// Accumulates predictions.
pub struct Tally {
    correct: Vec<usize>,
    total: Vec<usize>,
    top5_correct: usize,
}

/// How many classes rank above class `c` in `scores`: a higher score, or an equal one at a
/// lower index (so rank 0 is the first highest score, an argmax). A NaN score ranks above
/// nothing; a label whose own score is NaN ranks below every class.
fn rank_of(scores: &[f32], c: usize) -> usize {
    let s = scores[c];
    if s.is_nan() {
        return usize::MAX;
    }
    scores
        .iter()
        .enumerate()
        .filter(|&(k, &v)| v > s || (v == s && k < c))
        .count()
}

impl Tally {
    pub fn new(num_classes: usize) -> Self {
        Tally {
            correct: vec![0; num_classes],
            total: vec![0; num_classes],
            top5_correct: 0,
        }
    }

    /// One test image of class `label` with the model's `scores` (logits, one per class):
    /// top-1 correct when its class ranks first, top-5 when fewer than 5 rank above it.
    pub fn add(&mut self, label: u32, scores: &[f32]) -> Result<()> {
        let c = label as usize;
        if c >= self.total.len() {
            bail!(
                "test label {label} out of range: the model has {} classes",
                self.total.len()
            );
        }
        if scores.len() != self.total.len() {
            bail!(
                "{} scores for a model of {} classes",
                scores.len(),
                self.total.len()
            );
        }
        let rank = rank_of(scores, c);
        self.total[c] += 1;
        if rank == 0 {
            self.correct[c] += 1;
        }
        if rank < 5 {
            self.top5_correct += 1;
        }
        Ok(())
    }

    /// Adds every rank's counts to this one's (each rank counted its shard of the test set),
    /// so every rank holds the whole test set's.
    pub fn sum_across(&mut self, host_sum: impl FnOnce(&mut [f64]) -> Result<()>) -> Result<()> {
        // Counts are far below 2^53, so f64 sums them exactly.
        let mut counts: Vec<f64> = self
            .correct
            .iter()
            .chain(&self.total)
            .chain([&self.top5_correct])
            .map(|&n| n as f64)
            .collect();
        host_sum(&mut counts)?;
        let k = self.total.len();
        for (slot, &n) in self
            .correct
            .iter_mut()
            .chain(self.total.iter_mut())
            .chain([&mut self.top5_correct])
            .zip(&counts)
        {
            *slot = n as usize;
        }
        debug_assert_eq!(counts.len(), 2 * k + 1);
        Ok(())
    }

    /// The metrics, splitting classes by `class_counts` (training images per class).
    pub fn finish(&self, class_counts: &[usize], thresholds: SplitThresholds) -> Result<Metrics> {
        if class_counts.len() != self.total.len() {
            bail!(
                "{} class counts for {} classes",
                class_counts.len(),
                self.total.len()
            );
        }
        let test_images: usize = self.total.iter().sum();
        if test_images == 0 {
            bail!("no test images were evaluated");
        }
        let pct = |c: usize, t: usize| (t > 0).then(|| 100.0 * c as f64 / t as f64);
        let split = |keep: &dyn Fn(usize) -> bool| {
            let (mut c, mut t) = (0, 0);
            for (k, &n) in class_counts.iter().enumerate() {
                if keep(n) {
                    c += self.correct[k];
                    t += self.total[k];
                }
            }
            pct(c, t)
        };
        let SplitThresholds { many, few } = thresholds;
        Ok(Metrics {
            top1: 100.0 * self.correct.iter().sum::<usize>() as f64 / test_images as f64,
            top5: 100.0 * self.top5_correct as f64 / test_images as f64,
            many: split(&|n| n > many),
            medium: split(&|n| n <= many && n >= few),
            few: split(&|n| n < few),
            per_class: self
                .correct
                .iter()
                .zip(&self.total)
                .map(|(&c, &t)| pct(c, t))
                .collect(),
            class_counts: class_counts.to_vec(),
            test_images,
            split_thresholds: [many, few],
        })
    }
}

impl Metrics {
    /// The table printed at the end of evaluation.
    pub fn table(&self) -> String {
        let f = |v: Option<f64>| v.map_or("   -  ".to_string(), |v| format!("{v:6.2}"));
        format!(
            "top-1 {:6.2}   top-5 {:6.2}   many {}   medium {}   few {}   ({} test images; many > {}, few < {} training images)",
            self.top1,
            self.top5,
            f(self.many),
            f(self.medium),
            f(self.few),
            self.test_images,
            self.split_thresholds[0],
            self.split_thresholds[1]
        )
    }
}

/// One stage-2 epoch evaluated on the test set (`--eval-every-epoch`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpochEvaluation {
    /// 1-based.
    pub epoch: usize,
    /// The epoch's mean training loss.
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub many: Option<f64>,
    pub medium: Option<f64>,
    pub few: Option<f64>,
}

/// What `linear_epochs.json` holds: every stage-2 epoch's test-set evaluation and the best of
/// them. The best epoch is chosen by its top-1 on the test set itself, as the official stage 2
/// (`equal_lincls.py`) keeps `best_acc1` and `linear_best.pth.tar`: an optimistic number, not
/// a held-out estimate. The final model's metrics (`metrics.json`) are the headline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stage2Epochs {
    /// Always "test set": says on what the best epoch was selected.
    pub selected_on: &'static str,
    /// The epoch of the highest top-1 (the earliest of equals, as the official `acc1 >
    /// best_acc1`).
    pub best_epoch: usize,
    pub best: Metrics,
    pub epochs: Vec<EpochEvaluation>,
}

impl Stage2Epochs {
    pub const SELECTED_ON: &'static str = "test set";

    pub fn new() -> Self {
        Stage2Epochs {
            selected_on: Self::SELECTED_ON,
            best_epoch: 0,
            best: Metrics {
                top1: f64::NEG_INFINITY,
                top5: f64::NEG_INFINITY,
                many: None,
                medium: None,
                few: None,
                per_class: Vec::new(),
                class_counts: Vec::new(),
                test_images: 0,
                split_thresholds: [0, 0],
            },
            epochs: Vec::new(),
        }
    }

    /// Records epoch `epoch` (1-based) with its mean training loss and test metrics.
    pub fn push(&mut self, epoch: usize, loss: f64, m: &Metrics) {
        self.epochs.push(EpochEvaluation {
            epoch,
            loss,
            top1: m.top1,
            top5: m.top5,
            many: m.many,
            medium: m.medium,
            few: m.few,
        });
        if self.best_epoch == 0 || m.top1 > self.best.top1 {
            self.best_epoch = epoch;
            self.best = m.clone();
        }
    }

    /// The best epoch's table, labelled as selected on the test set.
    pub fn best_table(&self) -> String {
        format!(
            "best stage-2 epoch {} of {}, selected on the test set (as the official code's \
             best_acc1; not a held-out estimate):\n{}",
            self.best_epoch,
            self.epochs.len(),
            self.best.table()
        )
    }
}

impl Default for Stage2Epochs {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_by_training_count() {
        let mut t = Tally::new(3);
        let one_hot = |p: usize| {
            let mut s = [0.0f32; 3];
            s[p] = 1.0;
            s
        };
        // class 0 (many): 2/2, class 1 (medium): 1/2, class 2 (few): 0/1
        for (y, p) in [(0, 0), (0, 0), (1, 1), (1, 0), (2, 1)] {
            t.add(y, &one_hot(p)).unwrap();
        }
        let m = t.finish(&[500, 50, 5], SplitThresholds::default()).unwrap();
        assert_eq!(m.top1, 60.0);
        assert_eq!(
            (m.many, m.medium, m.few),
            (Some(100.0), Some(50.0), Some(0.0))
        );
        assert_eq!(m.per_class, vec![Some(100.0), Some(50.0), Some(0.0)]);
        // Three classes: every label is among the top 5.
        assert_eq!(m.top5, 100.0);
        assert!(t.add(3, &one_hot(0)).is_err());
        assert!(t.add(0, &[1.0, 0.0]).is_err());
    }

    #[test]
    fn thresholds_parse_and_empty_splits_are_null() {
        let th: SplitThresholds = "10, 3".parse().unwrap();
        assert_eq!(th, SplitThresholds { many: 10, few: 3 });
        assert!("3,10".parse::<SplitThresholds>().is_err());
        assert!("x".parse::<SplitThresholds>().is_err());
        let mut t = Tally::new(2);
        t.add(0, &[1.0, 0.0]).unwrap();
        let m = t.finish(&[50, 50], th).unwrap();
        assert_eq!((m.many, m.medium, m.few), (Some(100.0), None, None));
        assert_eq!(m.per_class, vec![Some(100.0), None]);
    }

    #[test]
    fn top5_counts_ranks_and_is_at_least_top1() {
        // Eight classes; scores descend with the index except where set.
        let scores = |top: &[(usize, f32)]| {
            let mut s: Vec<f32> = (0..8).map(|k| -(k as f32)).collect();
            for &(k, v) in top {
                s[k] = v;
            }
            s
        };
        assert_eq!(rank_of(&scores(&[]), 0), 0);
        assert_eq!(rank_of(&scores(&[]), 4), 4);
        assert_eq!(rank_of(&scores(&[]), 5), 5);
        // Ties go to the lower index, as an argmax keeps the first maximum.
        assert_eq!(rank_of(&scores(&[(3, 0.0)]), 3), 1);
        assert_eq!(rank_of(&scores(&[(3, 0.0)]), 0), 0);
        // NaN: ranks above nothing, and a NaN label is never correct.
        assert_eq!(rank_of(&scores(&[(0, f32::NAN)]), 1), 0);
        assert_eq!(rank_of(&scores(&[(2, f32::NAN)]), 2), usize::MAX);

        let mut t = Tally::new(8);
        t.add(0, &scores(&[])).unwrap(); // top-1
        t.add(4, &scores(&[])).unwrap(); // rank 4: top-5 only
        t.add(5, &scores(&[])).unwrap(); // rank 5: neither
        t.add(7, &scores(&[(7, 9.0)])).unwrap(); // top-1
        let m = t.finish(&[10; 8], SplitThresholds::default()).unwrap();
        assert_eq!((m.top1, m.top5), (50.0, 75.0));
        assert!(m.top5 >= m.top1);
        assert!(m.table().contains("top-5  75.00"), "{}", m.table());
    }

    #[test]
    fn the_best_epoch_is_the_first_highest_top1_and_says_test_set() {
        let metrics = |top1: f64| Metrics {
            top1,
            top5: 100.0,
            many: Some(top1),
            medium: None,
            few: None,
            per_class: vec![Some(top1)],
            class_counts: vec![1],
            test_images: 1,
            split_thresholds: [100, 20],
        };
        let mut e = Stage2Epochs::new();
        for (epoch, top1) in [(1, 50.0), (2, 80.0), (3, 80.0), (4, 70.0)] {
            e.push(epoch, 0.5, &metrics(top1));
        }
        assert_eq!((e.best_epoch, e.best.top1), (2, 80.0));
        assert_eq!(e.epochs.len(), 4);
        assert_eq!(e.epochs[3].top1, 70.0);
        assert!(e.best_table().contains("selected on the test set"));
        assert!(e.best_table().contains("epoch 2 of 4"));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["selected_on"], "test set");
        assert_eq!(json["best"]["top1"], 80.0);
    }
}
