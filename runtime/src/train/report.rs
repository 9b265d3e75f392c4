//! What each step reports, and the records of `log.jsonl` built from the reports: a step's
//! report with its epoch, global step and learning rate (and, added as it is written, its
//! kind, rate and phase); an epoch's number and mean loss.

use serde::Serialize;

/// What a step reports; `loss` is the one the epoch's mean and the plot take.
pub trait StepReport: Serialize {
    fn loss(&self) -> f64;
}

/// A contrastive stage-1 step: the total loss, DSCL's (or SupCon's) and PBSD's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ContrastiveReport {
    pub loss: f64,
    pub contrastive: f64,
    pub pbsd: f64,
}

impl StepReport for ContrastiveReport {
    fn loss(&self) -> f64 {
        self.loss
    }
}

/// A classifier step: the cross-entropy baseline's stage 1, and stage 2.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ClassifierReport {
    pub loss: f64,
}

impl StepReport for ClassifierReport {
    fn loss(&self) -> f64 {
        self.loss
    }
}

/// A step as it is shown and logged: its report, the epoch it belongs to (from 1), the steps
/// taken with it and the learning rate it took.
#[derive(Serialize)]
pub struct StepRecord<'a, R> {
    #[serde(flatten)]
    pub report: &'a R,
    pub epoch: usize,
    pub global_step: u64,
    pub lr: f64,
}

/// An epoch's end: the epochs done with it, and the mean loss of its steps.
#[derive(Serialize)]
#[serde(tag = "kind", rename = "epoch")]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
}
