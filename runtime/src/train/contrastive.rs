//! Stage 1 with DSCL or SupCon, and PBSD: the query encoder learns, the key encoder follows it
//! by momentum, and the keys of each step join the queue.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use dscl_core::backend::prelude::*;
use dscl_core::collective::{Collective, Placement};
use dscl_core::nn::Encoder;
use dscl_core::train::{DsclBatch, DsclModel, DsclStep, StepShape};
use rand::rngs::Xoshiro256PlusPlus;
use rand::SeedableRng;

use super::epochs::{self, Plan, SlotsNeeded, Stage};
use super::report::ContrastiveReport;
use super::stage1::{prepare_out, resume_from, saved_at, show_epoch};
use super::{augment_config, Position};
use crate::augment::{stage1_views, Stage1Views};
use crate::cluster::{Cluster, Exchange, TrainBackend};
use crate::config::{QueueInit, RunConfig};
use crate::data::{class_counts, key_shuffle, Batch, Dataset, Transform};
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
    let encoder: Encoder = model::encoder(cfg)?;
    let num_classes = data.num_classes();
    // Checkpoint: parameters, key encoder, velocity (3x), statistics, queue.
    let ckpt_bytes = 4 * (3 * encoder.params.total_len() + cfg.queue * (cfg.embedding_dim + 1));
    if plan.writes() {
        prepare_out(out, ckpt_bytes)?;
    }

    let step = DsclStep::placed(
        backend,
        &encoder,
        model::dscl_config(cfg),
        StepShape {
            batch: cfg.batch_size,
            image_size: cfg.image_size,
            crop_size: cfg.crop_size,
            num_classes: num_classes as u32,
        },
        cluster.placement(),
    )?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let mut m = DsclModel::new(backend, &encoder, cfg.queue, &mut rng)?;
    if cfg.queue_init == QueueInit::Random {
        // Drawn after the encoders from the same generator, as the official model draws its
        // queue after building them; a resume replaces it with the checkpoint's queue.
        m.queue.fill_random(backend, num_classes as u32, &mut rng)?;
    }
    let mut at = Position::default();
    if let Some(ckpt) = resume_from(out, cfg, resume)? {
        at = schema::load_contrastive(&ckpt, backend, cfg, &encoder, &mut m)?;
        if plan.writes() {
            eprintln!(
                "resuming from {} at epoch {} step {}",
                ckpt.path().display(),
                at.epoch + 1,
                at.step_in_epoch
            );
        }
    }
    let exchange = cluster.exchange_on(backend)?;
    // Every rank starts from rank 0's tensors (the same seed or checkpoint gives the same
    // ones; this makes sure of it).
    for set in [
        &mut m.query.params,
        &mut m.query.velocity,
        &mut m.key_params,
        &mut m.query_state,
        &mut m.key_state,
    ] {
        exchange.broadcast(backend, set.buffers_mut(), 0)?;
    }
    let mut stage = Contrastive::new(
        backend,
        cluster,
        &exchange,
        cfg,
        out,
        encoder,
        step,
        m,
        data.as_ref(),
    )?;
    epochs::run(&mut stage, &plan, at)?;
    Ok(())
}

/// The contrastive stage: its model and step, and the batch's host and device buffers.
struct Contrastive<'a, B: Backend> {
    backend: &'a B,
    cluster: &'a Cluster,
    /// With several processes: which of every batch's images are this rank's.
    exchange: &'a Exchange<'a>,
    cfg: &'a RunConfig,
    out: &'a Path,
    encoder: Encoder,
    step: DsclStep<B>,
    model: DsclModel<B>,
    class_counts: Vec<usize>,
    queries: Vec<f32>,
    keys: Vec<f32>,
    crops: Vec<f32>,
    boxes: Vec<f32>,
    queries_buf: B::Buffer,
    keys_buf: B::Buffer,
    crops_buf: B::Buffer,
    boxes_buf: B::Buffer,
    labels_buf: B::IndexBuffer,
    /// Slot j of the key batch holds image `shuffle[j]`: the identity with one replica group.
    shuffle: Vec<u32>,
}

impl<'a, B: TrainBackend> Contrastive<'a, B> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        backend: &'a B,
        cluster: &'a Cluster,
        exchange: &'a Exchange<'a>,
        cfg: &'a RunConfig,
        out: &'a Path,
        encoder: Encoder,
        step: DsclStep<B>,
        model: DsclModel<B>,
        data: &dyn Dataset,
    ) -> Result<Self> {
        let (s, cs, c) = (cfg.image_size, cfg.crop_size, cfg.crops);
        // This process's images of each batch.
        let b = step.local_batch();
        let (queries, keys) = (vec![0.0f32; b * 3 * s * s], vec![0.0f32; b * 3 * s * s]);
        let crops = vec![0.0f32; c * b * 3 * cs * cs];
        let boxes = vec![0.0f32; c * b * 5];
        Ok(Contrastive {
            backend,
            cluster,
            exchange,
            cfg,
            out,
            encoder,
            step,
            model,
            class_counts: class_counts(data),
            queries_buf: backend.alloc(queries.len())?,
            keys_buf: backend.alloc(keys.len())?,
            crops_buf: backend.alloc(crops.len().max(1))?,
            boxes_buf: backend.alloc(boxes.len().max(1))?,
            labels_buf: backend.alloc_index(b)?,
            queries,
            keys,
            crops,
            boxes,
            shuffle: (0..cfg.batch_size as u32).collect(),
        })
    }
}

impl<B: TrainBackend> Stage for Contrastive<'_, B> {
    type Item = Stage1Views;
    type Report = ContrastiveReport;

    fn transform(&self) -> Transform<Stage1Views> {
        let aug = augment_config(self.cfg);
        Arc::new(move |img, rng| Ok(stage1_views(img, &aug, rng)))
    }

    fn needs(&self) -> Option<SlotsNeeded> {
        let placement = Collective::<B>::placement(self.exchange);
        (placement.world > 1)
            .then(|| group_and_key_slots(self.cfg.seed, self.cfg.batch_size, placement))
    }

    fn step(
        &mut self,
        batch: &Batch<Option<Stage1Views>>,
        lr: f64,
        at: Position,
    ) -> Result<Self::Report> {
        let cfg = self.cfg;
        let (s, cs, c) = (cfg.image_size, cfg.crop_size, cfg.crops);
        let (qi, ki) = (3 * s * s, 3 * cs * cs);
        let pbsd = cfg.pbsd_weight > 0.0;
        if batch.items.len() != cfg.batch_size {
            bail!(
                "a stage-1 batch of {} images where {} were planned",
                batch.items.len(),
                cfg.batch_size
            );
        }
        // This process's images of the batch: `b` from `first` (all of them for one process).
        let b = self.step.local_batch();
        let first = Collective::<B>::placement(self.exchange).rank * b;
        // With several replica groups the key images go in at their shuffled slots, for the
        // key encoder's shuffled batch norm (batches are full: the loader drops the last);
        // this process's key slots are its group's.
        let shuffled = cfg.replicas > 1;
        if shuffled {
            key_shuffle(cfg.seed, at.global_step, &mut self.shuffle);
        }
        for (slot, &image) in self.shuffle[first..first + b].iter().enumerate() {
            self.keys[slot * qi..(slot + 1) * qi]
                .copy_from_slice(&batch.loaded(image as usize)?.key);
        }
        for i in 0..b {
            let v = batch.loaded(first + i)?;
            self.queries[i * qi..(i + 1) * qi].copy_from_slice(&v.query);
            if pbsd {
                for ci in 0..c {
                    let row = ci * b + i;
                    self.crops[row * ki..(row + 1) * ki].copy_from_slice(&v.crops[ci]);
                    let [x1, y1, x2, y2] = v.boxes[ci];
                    self.boxes[row * 5..row * 5 + 5].copy_from_slice(&[i as f32, x1, y1, x2, y2]);
                }
            }
        }
        let backend = self.backend;
        backend.upload(&mut self.queries_buf, 0, &self.queries)?;
        backend.upload(&mut self.keys_buf, 0, &self.keys)?;
        if pbsd {
            backend.upload(&mut self.crops_buf, 0, &self.crops)?;
            backend.upload(&mut self.boxes_buf, 0, &self.boxes)?;
        }
        backend.upload_index(&mut self.labels_buf, 0, &batch.labels[first..first + b])?;
        let inputs = DsclBatch {
            queries: &self.queries_buf,
            keys: &self.keys_buf,
            crops: &self.crops_buf,
            crop_boxes: &self.boxes_buf,
            labels: &self.labels_buf,
            key_shuffle: shuffled.then_some(&self.shuffle[..]),
        };
        let losses = self
            .step
            .step_across(
                backend,
                self.exchange,
                &self.encoder,
                &mut self.model,
                &inputs,
                lr,
            )
            .with_context(|| {
                format!(
                    "stage-1 step {} (epoch {})",
                    at.global_step + 1,
                    at.epoch + 1
                )
            })?;
        Ok(ContrastiveReport {
            loss: losses.total,
            contrastive: losses.contrastive,
            pbsd: losses.pbsd,
        })
    }

    fn save(&mut self, at: Position) -> Result<()> {
        // Rank 0's model is every rank's (checked here, at every checkpoint); it alone writes.
        self.cluster
            .check_same_model(self.backend, &self.model.query.params, at.global_step)?;
        if !self.cluster.writes() {
            return Ok(());
        }
        let run = Run {
            cfg: self.cfg,
            class_counts: &self.class_counts,
        };
        schema::save_contrastive(
            &self.out.join(STAGE1_FILE),
            self.backend,
            run,
            &self.encoder,
            &self.model,
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

/// The slots of every batch of `batch` images that rank `placement.rank` uses: its group's
/// (its queries and crops) and the images of its group's slots in the step's key shuffle (its
/// key images). Of R ranks' groups of B / R, a rank decodes at most 2B / R images a batch, about
/// (2 - 1 / R) B / R.
fn group_and_key_slots(seed: u64, batch: usize, placement: Placement) -> SlotsNeeded {
    let b = batch / placement.world;
    let first = placement.rank * b;
    // The last step's shuffle, which the workers share: they load one batch after another.
    let shuffled = Mutex::new((None, vec![0u32; batch]));
    Arc::new(move |step, slot| {
        if (first..first + b).contains(&slot) {
            return true;
        }
        // A worker that panicked holding the lock left a whole shuffle or none: recompute.
        let mut guard = shuffled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (of_step, shuffle) = &mut *guard;
        if *of_step != Some(step) {
            *of_step = None;
            key_shuffle(seed, step, shuffle);
            *of_step = Some(step);
        }
        shuffle[first..first + b].contains(&(slot as u32))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rank_needs_its_group_and_its_key_slots_images_and_nothing_else() {
        let (seed, batch) = (7, 256);
        for world in [2, 8] {
            let b = batch / world;
            let mut needed_total = 0;
            for rank in 0..world {
                let needs = group_and_key_slots(seed, batch, Placement { rank, world });
                for step in 0..20 {
                    let mut shuffle = vec![0u32; batch];
                    key_shuffle(seed, step, &mut shuffle);
                    let keys = &shuffle[rank * b..(rank + 1) * b];
                    for slot in 0..batch {
                        let used = slot / b == rank || keys.contains(&(slot as u32));
                        assert_eq!(
                            needs(step, slot),
                            used,
                            "world {world} rank {rank} step {step} slot {slot}"
                        );
                        needed_total += used as usize;
                    }
                }
            }
            // Group and key images overlap by about b / R: about (2 - 1 / R) b a rank.
            let per_rank = needed_total as f64 / (world * 20) as f64;
            let expected = (2.0 - 1.0 / world as f64) * b as f64;
            assert!(
                (per_rank - expected).abs() < 0.1 * b as f64,
                "world {world}: {per_rank}"
            );
        }
    }
}
