//! Stage 1 of the cross-entropy baseline: a classifier trained end to end on the
//! instance-sampled (long-tailed) data, with RandomResizedCrop and flips, in `--replicas`
//! groups (batch-norm statistics per group, as the official DDP run), on one process or one
//! group per rank of a `--distributed` run.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use dscl_core::backend::prelude::*;
use dscl_core::collective::Collective;
use dscl_core::nn::{ResNetClassifier, TensorSet};
use dscl_core::train::{ClassifierStep, SgdConfig, Trainable};
use rand::rngs::Xoshiro256PlusPlus;
use rand::SeedableRng;

use super::epochs::{self, Plan, SlotsNeeded, Stage};
use super::group_input::GroupInput;
use super::report::ClassifierReport;
use super::stage1::{prepare_out, resume_from, saved_at, show_epoch};
use super::{augment_config, Position};
use crate::augment::stage2_view;
use crate::cluster::{Cluster, Exchange, TrainBackend};
use crate::config::RunConfig;
use crate::data::{class_counts, Batch, Transform};
use crate::io::checkpoint::schema::{self, Run};
use crate::io::out_dir::STAGE1_FILE;
use crate::io::progress::Progress;
use crate::model;

pub(super) fn train<B: TrainBackend>(
    backend: &B,
    cluster: &Cluster,
    plan: Plan<'_>,
    resume: bool,
) -> Result<()> {
    let (cfg, out, data) = (plan.cfg, plan.out, plan.data);
    let net: ResNetClassifier = model::classifier(cfg, data.num_classes())?;
    let (big_b, s) = (cfg.batch_size, cfg.image_size);
    if plan.writes() {
        prepare_out(out, 8 * net.params.total_len())?;
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let mut weights = Trainable::initialised(backend, &net.params, &mut rng)?;
    let mut state = TensorSet::initialised(backend, &net.state, &mut rng)?;
    let placement = cluster.placement();
    let step = match placement.world {
        1 => ClassifierStep::replicated(backend, &net.backbone, &net.fc, big_b, s, cfg.replicas)?,
        _ => ClassifierStep::placed(backend, &net.backbone, &net.fc, big_b, s, placement)?,
    };
    let mut at = Position::default();
    if let Some(ckpt) = resume_from(out, cfg, resume)? {
        at = schema::load_cross_entropy(&ckpt, backend, &net, &mut weights, &mut state)?;
    }
    let exchange = cluster.exchange_on(backend)?;
    // Every rank starts from rank 0's tensors.
    for set in [&mut weights.params, &mut weights.velocity, &mut state] {
        exchange.broadcast(backend, set.buffers_mut(), 0)?;
    }
    let input = GroupInput::new(backend, placement, step.local_batch(), s)?;
    let mut stage = CrossEntropy {
        backend,
        cluster,
        exchange: &exchange,
        cfg,
        out,
        class_counts: class_counts(data.as_ref()),
        input,
        sgd: model::sgd(cfg),
        net,
        weights,
        state,
        step,
    };
    epochs::run(&mut stage, &plan, at)?;
    Ok(())
}

/// The cross-entropy stage: its classifier and step, and the batch's host and device buffers.
struct CrossEntropy<'a, B: Backend> {
    backend: &'a B,
    cluster: &'a Cluster,
    exchange: &'a Exchange<'a>,
    cfg: &'a RunConfig,
    out: &'a Path,
    class_counts: Vec<usize>,
    net: ResNetClassifier,
    weights: Trainable<B>,
    state: TensorSet<B>,
    step: ClassifierStep<B>,
    sgd: SgdConfig,
    /// This process's images and labels of each batch.
    input: GroupInput<B>,
}

impl<B: TrainBackend> Stage for CrossEntropy<'_, B> {
    type Item = Vec<f32>;
    type Report = ClassifierReport;

    fn transform(&self) -> Transform<Vec<f32>> {
        let mut aug = augment_config(self.cfg);
        // The supervised baseline: RandomResizedCrop + flip; the colour operations of `stage2`
        // are the official linear classifier's.
        aug.stage2 = aug.stage2.without_colour();
        Arc::new(move |img, rng| Ok(stage2_view(img, &aug, rng)))
    }

    fn needs(&self) -> Option<SlotsNeeded> {
        self.input.needs()
    }

    fn step(
        &mut self,
        batch: &Batch<Option<Vec<f32>>>,
        lr: f64,
        at: Position,
    ) -> Result<Self::Report> {
        self.input.upload(self.backend, batch)?;
        let loss = self
            .step
            .cross_entropy_step_across(
                self.backend,
                self.exchange,
                &self.net.backbone,
                &self.net.fc,
                &mut self.weights,
                &mut self.state,
                &self.input.images_buf,
                &self.input.labels_buf,
                &self.sgd,
                lr,
            )
            .with_context(|| format!("cross-entropy step {}", at.global_step + 1))?;
        Ok(ClassifierReport { loss })
    }

    fn save(&mut self, at: Position) -> Result<()> {
        // Rank 0's model is every rank's (checked here, at every checkpoint); it alone writes.
        self.cluster
            .check_same_model(self.backend, &self.weights.params, at.global_step)?;
        if !self.cluster.writes() {
            return Ok(());
        }
        let run = Run {
            cfg: self.cfg,
            class_counts: &self.class_counts,
        };
        schema::save_cross_entropy(
            &self.out.join(STAGE1_FILE),
            self.backend,
            run,
            &self.net,
            &self.weights,
            &self.state,
            at,
        )
    }

    fn saved(&self, at: Position) -> String {
        saved_at(self.out, at)
    }

    fn epoch_done(
        &mut self,
        plan: &Plan<'_>,
        epochs_done: usize,
        mean: f64,
        progress: &Progress,
    ) -> Result<()> {
        show_epoch(plan, epochs_done, mean, progress);
        Ok(())
    }
}
