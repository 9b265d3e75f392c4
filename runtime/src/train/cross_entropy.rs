//! Stage 1 of the cross-entropy baseline: a classifier trained end to end on the
//! instance-sampled (long-tailed) data, with RandomResizedCrop and flips.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use dscl_core::backend::prelude::*;
use dscl_core::nn::{ResNetClassifier, TensorSet};
use dscl_core::train::{ClassifierStep, SgdConfig, Trainable};
use rand::rngs::Xoshiro256PlusPlus;
use rand::SeedableRng;

use super::epochs::{self, Plan, Stage};
use super::report::ClassifierReport;
use super::stage1::{prepare_out, resume_from, saved_at, show_epoch};
use super::{augment_config, Position};
use crate::augment::stage2_view;
use crate::config::RunConfig;
use crate::data::{class_counts, Batch, Transform};
use crate::io::checkpoint::schema::{self, Run};
use crate::io::out_dir::STAGE1_FILE;
use crate::io::progress::Progress;
use crate::model;

pub(super) fn train<B: Backend<Elem = f32>>(
    backend: &B,
    plan: Plan<'_>,
    resume: bool,
) -> Result<()> {
    let (cfg, out, data) = (plan.cfg, plan.out, plan.data);
    let net: ResNetClassifier = model::classifier(cfg, data.num_classes())?;
    let (b, s) = (cfg.batch_size, cfg.image_size);
    prepare_out(out, 8 * net.params.total_len())?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let mut weights = Trainable::initialised(backend, &net.params, &mut rng)?;
    let mut state = TensorSet::initialised(backend, &net.state, &mut rng)?;
    let step = ClassifierStep::new(backend, &net.backbone, &net.fc, b, s)?;
    let mut at = Position::default();
    if let Some(ckpt) = resume_from(out, cfg, resume)? {
        at = schema::load_cross_entropy(&ckpt, backend, &net, &mut weights, &mut state)?;
    }
    let x = vec![0.0f32; b * 3 * s * s];
    let mut stage = CrossEntropy {
        backend,
        cfg,
        out,
        class_counts: class_counts(data.as_ref()),
        x_buf: backend.alloc(x.len())?,
        labels_buf: backend.alloc_index(b)?,
        x,
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
    cfg: &'a RunConfig,
    out: &'a Path,
    class_counts: Vec<usize>,
    net: ResNetClassifier,
    weights: Trainable<B>,
    state: TensorSet<B>,
    step: ClassifierStep<B>,
    sgd: SgdConfig,
    x: Vec<f32>,
    x_buf: B::Buffer,
    labels_buf: B::IndexBuffer,
}

impl<B: Backend<Elem = f32>> Stage for CrossEntropy<'_, B> {
    type Item = Vec<f32>;
    type Report = ClassifierReport;

    fn transform(&self) -> Transform<Vec<f32>> {
        let mut aug = augment_config(self.cfg);
        // The supervised baseline: RandomResizedCrop + flip; the colour operations of `stage2`
        // are the official linear classifier's.
        aug.stage2 = aug.stage2.without_colour();
        Arc::new(move |img, rng| Ok(stage2_view(img, &aug, rng)))
    }

    fn step(&mut self, batch: &Batch<Vec<f32>>, lr: f64, at: Position) -> Result<Self::Report> {
        let n = 3 * self.cfg.image_size * self.cfg.image_size;
        for (i, v) in batch.items.iter().enumerate() {
            self.x[i * n..(i + 1) * n].copy_from_slice(v);
        }
        self.backend.upload(&mut self.x_buf, 0, &self.x)?;
        self.backend
            .upload_index(&mut self.labels_buf, 0, &batch.labels)?;
        let loss = self
            .step
            .cross_entropy_step(
                self.backend,
                &self.net.backbone,
                &self.net.fc,
                &mut self.weights,
                &mut self.state,
                &self.x_buf,
                &self.labels_buf,
                &self.sgd,
                lr,
            )
            .with_context(|| format!("cross-entropy step {}", at.global_step + 1))?;
        Ok(ClassifierReport { loss })
    }

    fn save(&mut self, at: Position) -> Result<()> {
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
