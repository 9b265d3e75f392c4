//! What each checkpoint of a run holds, every part's writing beside its reading.
//!
//! Every checkpoint records the run's configuration ([`key::CONFIG`], the [`RunConfig`] as
//! JSON), the [`Stage`] that wrote it and the classes it was trained on ([`key::NUM_CLASSES`],
//! [`key::CLASS_COUNTS`], training images per class). Beyond that:
//!
//! - `stage1` ([`Stage::Contrastive`]) and `ce` ([`Stage::CrossEntropy`]), the stage-1
//!   checkpoint: the model's parameters and running statistics under their own names with
//!   torchvision's batch counters, the SGD velocity under [`VELOCITY`] with the optimizer's step
//!   count, and the position to resume from (epoch, step in it, global step); `stage1` adds the
//!   key encoder under [`KEY_ENCODER`] and the queue ([`QUEUE_KEYS`], [`QUEUE_LABELS`], its
//!   fill and next row).
//! - `linear` ([`Stage::Linear`]), stage 2's classifier: the backbone, its re-estimated
//!   statistics and `fc`, laid out as a torchvision classifier, and the stage its backbone came
//!   from ([`key::BACKBONE_STAGE`]).

use std::path::Path;

use anyhow::{Context, Result};
use dscl_core::backend::prelude::*;
use dscl_core::nn::{Encoder, LinearClassifier, ResNetClassifier, TensorLayout, TensorSet};
use dscl_core::train::{DsclModel, Trainable};

use super::{put_batch_counters, Checkpoint, CheckpointWriter};
use crate::config::RunConfig;
use crate::model::Backbone;
use crate::train::Position;

/// The metadata keys.
pub mod key {
    pub const CONFIG: &str = "config";
    pub const STAGE: &str = "stage";
    pub const NUM_CLASSES: &str = "num_classes";
    pub const CLASS_COUNTS: &str = "class_counts";
    pub const EPOCH: &str = "epoch";
    pub const STEP_IN_EPOCH: &str = "step_in_epoch";
    pub const GLOBAL_STEP: &str = "global_step";
    pub const OPTIMIZER_STEPS: &str = "optimizer_steps";
    pub const QUEUE_FILLED: &str = "queue_filled";
    pub const QUEUE_NEXT: &str = "queue_next";
    pub const BACKBONE_STAGE: &str = "backbone_stage";
}

/// The prefix of the key encoder's tensors.
pub const KEY_ENCODER: &str = "key_encoder.";
/// The prefix of the SGD velocity's tensors.
pub const VELOCITY: &str = "optimizer.velocity.";
pub const QUEUE_KEYS: &str = "queue.keys";
pub const QUEUE_LABELS: &str = "queue.labels";

/// The stage that wrote a checkpoint, as [`key::STAGE`] names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Stage 1 with DSCL or SupCon.
    Contrastive,
    /// Stage 1 of the cross-entropy baseline.
    CrossEntropy,
    /// Stage 2.
    Linear,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Contrastive => "stage1",
            Stage::CrossEntropy => "ce",
            Stage::Linear => "linear",
        }
    }

    /// The stage of a recorded name; `None` for a name no stage writes.
    pub fn named(name: &str) -> Option<Stage> {
        [Stage::Contrastive, Stage::CrossEntropy, Stage::Linear]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// The name of the stage that wrote `ckpt` (any name, so a refusal can show it).
pub fn stage_name(ckpt: &Checkpoint) -> Result<&str> {
    ckpt.meta(key::STAGE)
}

/// The run's configuration `ckpt` records.
pub fn config(ckpt: &Checkpoint) -> Result<RunConfig> {
    RunConfig::from_json(ckpt.meta(key::CONFIG)?)
        .with_context(|| format!("{}: unreadable config record", ckpt.path().display()))
}

/// The classes `ckpt` was trained on: their number, and the training images of each.
pub fn classes(ckpt: &Checkpoint) -> Result<(usize, Vec<usize>)> {
    let num_classes: usize = ckpt
        .meta(key::NUM_CLASSES)?
        .parse()
        .context(key::NUM_CLASSES)?;
    let counts: Vec<usize> =
        serde_json::from_str(ckpt.meta(key::CLASS_COUNTS)?).context(key::CLASS_COUNTS)?;
    Ok((num_classes, counts))
}

/// The run a checkpoint belongs to: its configuration, and the training images of each of
/// its classes.
#[derive(Clone, Copy)]
pub struct Run<'a> {
    pub cfg: &'a RunConfig,
    pub class_counts: &'a [usize],
}

/// The records every checkpoint carries.
fn put_run(w: &mut CheckpointWriter, run: Run<'_>, stage: Stage) {
    w.put_meta(key::CONFIG, run.cfg.to_json());
    w.put_meta(key::STAGE, stage.name());
    w.put_meta(key::NUM_CLASSES, run.class_counts.len().to_string());
    w.put_meta(
        key::CLASS_COUNTS,
        serde_json::Value::from(run.class_counts).to_string(),
    );
}

fn put_position(w: &mut CheckpointWriter, at: Position) {
    w.put_meta(key::EPOCH, at.epoch.to_string());
    w.put_meta(key::STEP_IN_EPOCH, at.step_in_epoch.to_string());
    w.put_meta(key::GLOBAL_STEP, at.global_step.to_string());
}

fn position(ckpt: &Checkpoint) -> Result<Position> {
    let num = |k: &str| -> Result<u64> {
        ckpt.meta(k)?
            .parse::<u64>()
            .with_context(|| format!("{}: bad `{k}` record", ckpt.path().display()))
    };
    Ok(Position {
        epoch: num(key::EPOCH)? as usize,
        step_in_epoch: num(key::STEP_IN_EPOCH)? as usize,
        global_step: num(key::GLOBAL_STEP)?,
    })
}

/// A trained model as stage 1 stores it: parameters, batch-norm statistics (with torchvision's
/// counters, at the steps taken), SGD velocity and step count.
fn put_trainable<B: Backend<Elem = f32>>(
    w: &mut CheckpointWriter,
    backend: &B,
    (params, state): (&TensorLayout, &TensorLayout),
    weights: &Trainable<B>,
    statistics: &TensorSet<B>,
    at: Position,
) -> Result<()> {
    w.put_set(backend, params, &weights.params, "")?;
    w.put_set(backend, state, statistics, "")?;
    put_batch_counters(w, state, "", at.global_step as i64)?;
    w.put_set(backend, params, &weights.velocity, VELOCITY)?;
    w.put_meta(key::OPTIMIZER_STEPS, weights.steps().to_string());
    Ok(())
}

fn get_trainable<B: Backend<Elem = f32>>(
    ckpt: &Checkpoint,
    backend: &B,
    (params, state): (&TensorLayout, &TensorLayout),
    weights: &mut Trainable<B>,
    statistics: &mut TensorSet<B>,
) -> Result<()> {
    ckpt.get_set(backend, params, &mut weights.params, "")?;
    ckpt.get_set(backend, state, statistics, "")?;
    ckpt.get_set(backend, params, &mut weights.velocity, VELOCITY)?;
    weights.set_steps(
        ckpt.meta(key::OPTIMIZER_STEPS)?
            .parse()
            .context(key::OPTIMIZER_STEPS)?,
    );
    Ok(())
}

/// Writes the contrastive stage 1 at `at` to `path`.
pub fn save_contrastive<B: Backend<Elem = f32>>(
    path: &Path,
    backend: &B,
    run: Run<'_>,
    encoder: &Encoder,
    m: &DsclModel<B>,
    at: Position,
) -> Result<()> {
    let mut w = CheckpointWriter::new();
    let layouts = (&encoder.params, &encoder.state);
    put_trainable(&mut w, backend, layouts, &m.query, &m.query_state, at)?;
    w.put_set(backend, &encoder.params, &m.key_params, KEY_ENCODER)?;
    w.put_set(backend, &encoder.state, &m.key_state, KEY_ENCODER)?;
    let (k, d) = (run.cfg.queue, run.cfg.embedding_dim);
    if k > 0 {
        let mut keys = vec![0.0f32; k * d];
        let mut labels = vec![0u32; k];
        backend.download(&m.queue.keys, 0, &mut keys)?;
        backend.download_index(&m.queue.labels, 0, &mut labels)?;
        w.put_f32(QUEUE_KEYS, &[k, d], &keys)?;
        w.put_u32(QUEUE_LABELS, &[k], &labels)?;
    }
    w.put_meta(key::QUEUE_FILLED, m.queue.filled().to_string());
    w.put_meta(key::QUEUE_NEXT, m.queue.next_row().to_string());
    put_run(&mut w, run, Stage::Contrastive);
    put_position(&mut w, at);
    w.write_atomic(path)
}

/// Reads what [`save_contrastive`] wrote into `m`; returns the position to continue from.
pub fn load_contrastive<B: Backend<Elem = f32>>(
    ckpt: &Checkpoint,
    backend: &B,
    cfg: &RunConfig,
    encoder: &Encoder,
    m: &mut DsclModel<B>,
) -> Result<Position> {
    let at = position(ckpt)?;
    let layouts = (&encoder.params, &encoder.state);
    get_trainable(ckpt, backend, layouts, &mut m.query, &mut m.query_state)?;
    ckpt.get_set(backend, &encoder.params, &mut m.key_params, KEY_ENCODER)?;
    ckpt.get_set(backend, &encoder.state, &mut m.key_state, KEY_ENCODER)?;
    if cfg.queue > 0 {
        let (_, keys) = ckpt.get_f32(QUEUE_KEYS)?;
        let (_, labels) = ckpt.get_u32(QUEUE_LABELS)?;
        backend.upload(&mut m.queue.keys, 0, &keys)?;
        backend.upload_index(&mut m.queue.labels, 0, &labels)?;
        m.queue.set_position(
            ckpt.meta(key::QUEUE_FILLED)?
                .parse()
                .context(key::QUEUE_FILLED)?,
            ckpt.meta(key::QUEUE_NEXT)?
                .parse()
                .context(key::QUEUE_NEXT)?,
        )?;
    }
    Ok(at)
}

/// Writes the cross-entropy stage 1 at `at` to `path`.
pub fn save_cross_entropy<B: Backend<Elem = f32>>(
    path: &Path,
    backend: &B,
    run: Run<'_>,
    net: &ResNetClassifier,
    weights: &Trainable<B>,
    state: &TensorSet<B>,
    at: Position,
) -> Result<()> {
    let mut w = CheckpointWriter::new();
    put_trainable(
        &mut w,
        backend,
        (&net.params, &net.state),
        weights,
        state,
        at,
    )?;
    put_run(&mut w, run, Stage::CrossEntropy);
    put_position(&mut w, at);
    w.write_atomic(path)
}

/// Reads what [`save_cross_entropy`] wrote; returns the position to continue from.
pub fn load_cross_entropy<B: Backend<Elem = f32>>(
    ckpt: &Checkpoint,
    backend: &B,
    net: &ResNetClassifier,
    weights: &mut Trainable<B>,
    state: &mut TensorSet<B>,
) -> Result<Position> {
    let at = position(ckpt)?;
    get_trainable(ckpt, backend, (&net.params, &net.state), weights, state)?;
    Ok(at)
}

/// Reads the backbone of a stage-1 checkpoint of either loss: its tensors come first, under
/// the same names, in both layouts, so a contrastive checkpoint's projection head and a
/// cross-entropy checkpoint's own `fc` are left behind.
pub fn load_backbone<B: Backend<Elem = f32>>(
    ckpt: &Checkpoint,
    backend: &B,
    net: &Backbone,
    params: &mut TensorSet<B>,
    state: &mut TensorSet<B>,
) -> Result<()> {
    ckpt.get_set(backend, &net.params, params, "")?;
    ckpt.get_set(backend, &net.state, state, "")
}

/// Stage 2's classifier: the backbone it trained on top of (`params`, its statistics `state`
/// as stage 2 re-estimated them over `steps` steps), the linear classifier `fc`, and the stage
/// the backbone came from.
pub struct LinearModel<'a, B: Backend> {
    pub backbone: &'a Backbone,
    pub params: &'a TensorSet<B>,
    pub state: &'a TensorSet<B>,
    pub probe: &'a LinearClassifier,
    pub fc: &'a TensorSet<B>,
    pub steps: u64,
    pub backbone_stage: &'a str,
}

/// Writes stage 2's classifier to `path`, laid out as a torchvision classifier.
pub fn save_linear<B: Backend<Elem = f32>>(
    path: &Path,
    backend: &B,
    run: Run<'_>,
    model: LinearModel<'_, B>,
) -> Result<()> {
    let mut w = CheckpointWriter::new();
    let net = model.backbone;
    w.put_set(backend, &net.params, model.params, "")?;
    w.put_set(backend, &net.state, model.state, "")?;
    put_batch_counters(&mut w, &net.state, "", model.steps as i64)?;
    w.put_set(backend, &model.probe.params, model.fc, "")?;
    put_run(&mut w, run, Stage::Linear);
    w.put_meta(key::BACKBONE_STAGE, model.backbone_stage);
    w.write_atomic(path)
}

/// Reads a classifier (stage 2's, or the cross-entropy baseline's stage 1), which both lay
/// out as a torchvision classifier, into `params` and `state`.
pub fn load_classifier<B: Backend<Elem = f32>>(
    ckpt: &Checkpoint,
    backend: &B,
    net: &ResNetClassifier,
    params: &mut TensorSet<B>,
    state: &mut TensorSet<B>,
) -> Result<()> {
    ckpt.get_set(backend, &net.params, params, "")?;
    ckpt.get_set(backend, &net.state, state, "")
}
