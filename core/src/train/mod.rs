//! Training: the optimizer, learning-rate schedules, the key queue, the model state of a
//! stage-1 run, and the steps — stage 1 (DSCL + PBSD), stage 2 (linear classifier on the
//! frozen backbone) and the cross-entropy baseline.

pub mod classifier_step;
pub mod dscl_step;
pub mod model;
pub mod optim;
pub mod queue;
pub mod recipe;
pub mod schedule;
pub mod tail_step;

pub use classifier_step::ClassifierStep;
pub use dscl_step::{
    ContrastiveLoss, CropNorm, DsclBatch, DsclConfig, DsclStep, StepLosses, StepShape, MAX_REPLICAS,
};
pub use model::DsclModel;
pub use optim::{SgdConfig, Trainable};
pub use queue::KeyQueue;
pub use recipe::{Stage1Recipe, Stage2Recipe};
pub use schedule::LrSchedule;
pub use tail_step::{TailConfig, TailModel, TailStep, ViewPass};
