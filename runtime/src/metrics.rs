//! Long-tailed evaluation: top-1 accuracy overall and on Many / Medium / Few classes (by the
//! number of training images of each class), and per class.

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
}

impl Tally {
    pub fn new(num_classes: usize) -> Self {
        Tally {
            correct: vec![0; num_classes],
            total: vec![0; num_classes],
        }
    }

    pub fn add(&mut self, label: u32, predicted: u32) -> Result<()> {
        let c = label as usize;
        if c >= self.total.len() {
            bail!(
                "test label {label} out of range: the model has {} classes",
                self.total.len()
            );
        }
        self.total[c] += 1;
        if label == predicted {
            self.correct[c] += 1;
        }
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
            "top-1 {:6.2}   many {}   medium {}   few {}   ({} test images; many > {}, few < {} training images)",
            self.top1,
            f(self.many),
            f(self.medium),
            f(self.few),
            self.test_images,
            self.split_thresholds[0],
            self.split_thresholds[1]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_by_training_count() {
        let mut t = Tally::new(3);
        // class 0 (many): 2/2, class 1 (medium): 1/2, class 2 (few): 0/1
        for (y, p) in [(0, 0), (0, 0), (1, 1), (1, 0), (2, 1)] {
            t.add(y, p).unwrap();
        }
        let m = t.finish(&[500, 50, 5], SplitThresholds::default()).unwrap();
        assert_eq!(m.top1, 60.0);
        assert_eq!(
            (m.many, m.medium, m.few),
            (Some(100.0), Some(50.0), Some(0.0))
        );
        assert_eq!(m.per_class, vec![Some(100.0), Some(50.0), Some(0.0)]);
        assert!(t.add(3, 0).is_err());
    }

    #[test]
    fn thresholds_parse_and_empty_splits_are_null() {
        let th: SplitThresholds = "10, 3".parse().unwrap();
        assert_eq!(th, SplitThresholds { many: 10, few: 3 });
        assert!("3,10".parse::<SplitThresholds>().is_err());
        assert!("x".parse::<SplitThresholds>().is_err());
        let mut t = Tally::new(2);
        t.add(0, 0).unwrap();
        let m = t.finish(&[50, 50], th).unwrap();
        assert_eq!((m.many, m.medium, m.few), (Some(100.0), None, None));
        assert_eq!(m.per_class, vec![Some(100.0), None]);
    }
}
