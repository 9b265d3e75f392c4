//! `runtime train`: stage 1. DSCL (or SupCon) + PBSD with a momentum encoder and a queue, or,
//! with `--loss ce`, the cross-entropy baseline trained end to end.
//!
//! Checkpoints go to `OUT/stage1.safetensors` at the end of every epoch (and every
//! `--checkpoint-every` steps), atomically. `--resume` continues from it exactly: the sample
//! order and every augmentation are functions of (seed, epoch, position), and everything the
//! step carries (parameters, momentum encoder, velocity, queue, batch-norm statistics) is in
//! the checkpoint, so the losses after a resume equal those of an uninterrupted run.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use dscl_core::nn::{Encoder, ResNetClassifier, TensorLayout, TensorSet};
use dscl_core::train::{
    ClassifierStep, DsclBatch, DsclModel, DsclStep, LrSchedule, StepShape, Trainable,
};
use dscl_core::Backend;
use rand::rngs::Xoshiro256PlusPlus;
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::augment::{stage1_views, stage2_view, AugmentConfig, Stage1Views};
use crate::config::{LossKind, QueueInit, RunConfig};
use crate::data::{
    class_counts, epoch_order, epoch_seed, key_shuffle, workers, Batch, Dataset, Loader,
    LoaderConfig, Transform,
};
use crate::interrupt::{self, Interrupted};
use crate::io::checkpoint::{
    put_batch_counters, remove_stale_temporaries, Checkpoint, CheckpointWriter,
};
use crate::io::out_dir;
use crate::io::progress::{retain_log, Progress};
use crate::model;

pub const STAGE1_FILE: &str = "stage1.safetensors";
pub const LOG_FILE: &str = "log.jsonl";

/// Where a run is: the next step to take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub epoch: usize,
    /// Steps of `epoch` already taken.
    pub step_in_epoch: usize,
    pub global_step: u64,
}

/// The augmentation settings of a run.
pub fn augment_config(cfg: &RunConfig) -> AugmentConfig {
    let mut a = AugmentConfig {
        crop_size: cfg.crop_size,
        crops: cfg.crops.max(1),
        ..AugmentConfig::for_image_size(cfg.image_size)
    };
    a.image_scale.0 = cfg.min_scale;
    if !cfg.flip {
        for ops in [&mut a.query, &mut a.key, &mut a.crop, &mut a.stage2] {
            ops.flip_p = 0.0;
        }
    }
    a
}

/// Trains on `data`, the training set of `cfg` as [`open_train`](crate::data::open_train) opens it (the command opens
/// it before the backend, so bad data is refused before a device starts).
///
/// `stop_after`: end this invocation after that many steps, with a checkpoint written, so a
/// time-boxed job can continue later with `--resume`.
pub fn train<B: Backend<Elem = f32>>(
    backend: &B,
    cfg: &RunConfig,
    data: Arc<dyn Dataset>,
    out: &Path,
    resume: bool,
    stop_after: Option<u64>,
) -> Result<PathBuf> {
    let steps_per_epoch = data.len() / cfg.batch_size;
    if steps_per_epoch == 0 {
        bail!(
            "--batch-size {} is larger than the training set ({} images)",
            cfg.batch_size,
            data.len()
        );
    }
    eprintln!(
        "stage 1: {} training images in {} classes (largest class {}, smallest {}), {} on {}",
        data.len(),
        data.num_classes(),
        class_counts(data.as_ref()).iter().max().unwrap_or(&0),
        class_counts(data.as_ref()).iter().min().unwrap_or(&0),
        match cfg.loss {
            LossKind::Dscl => "DSCL",
            LossKind::Scl => "SupCon",
            LossKind::Ce => "cross-entropy",
        },
        backend.device_name()
    );
    match cfg.loss {
        LossKind::Ce => {
            train_cross_entropy(backend, cfg, out, resume, stop_after, data, steps_per_epoch)
        }
        LossKind::Dscl | LossKind::Scl => {
            train_contrastive(backend, cfg, out, resume, stop_after, data, steps_per_epoch)
        }
    }
}

/// Before any step: removes what interrupted checkpoint writes left in `out`, then proves
/// `out` writable with room for the run's checkpoints of about `checkpoint_bytes` each.
fn prepare_out(out: &Path, checkpoint_bytes: usize) -> Result<()> {
    let path = out.join(STAGE1_FILE);
    let removed = remove_stale_temporaries(&path)?;
    if removed > 0 {
        eprintln!(
            "removed {removed} unfinished checkpoint file(s) left in {} by an interrupted run",
            out.display()
        );
    }
    // Each checkpoint is written beside the previous one until it replaces it, so the run
    // needs room for two at once; one already on disk has its room.
    let existing = std::fs::metadata(&path).map_or(0, |m| m.len() as usize);
    let room = (2 * checkpoint_bytes).saturating_sub(existing) + (1 << 20);
    out_dir::prepare_files(out, room as u64, checkpoint_bytes as u64)
}

/// Reads `OUT/stage1.safetensors` for `--resume`: `None` when there is none yet.
fn resume_from(out: &Path, cfg: &RunConfig, resume: bool) -> Result<Option<Checkpoint>> {
    let path = out.join(STAGE1_FILE);
    if !resume {
        return Ok(None);
    }
    if !path.exists() {
        eprintln!(
            "--resume: no {} yet, starting from the beginning",
            path.display()
        );
        return Ok(None);
    }
    let ckpt = Checkpoint::read(&path)?;
    let saved = RunConfig::from_json(ckpt.meta("config")?)
        .with_context(|| format!("{}: unreadable config record", path.display()))?;
    let differences = saved.differences(cfg);
    if !differences.is_empty() {
        bail!(
            "--resume: {} was written by a run with different settings; use the same flags:\n  {}",
            path.display(),
            differences.join("\n  ")
        );
    }
    Ok(Some(ckpt))
}

fn position_of(ckpt: &Checkpoint) -> Result<Position> {
    let num = |k: &str| -> Result<u64> {
        ckpt.meta(k)?
            .parse::<u64>()
            .with_context(|| format!("{}: bad `{k}` record", ckpt.path().display()))
    };
    Ok(Position {
        epoch: num("epoch")? as usize,
        step_in_epoch: num("step_in_epoch")? as usize,
        global_step: num("global_step")?,
    })
}

fn put_position(w: &mut CheckpointWriter, cfg: &RunConfig, stage: &str, at: Position) {
    w.put_meta("config", cfg.to_json());
    w.put_meta("stage", stage);
    w.put_meta("epoch", at.epoch.to_string());
    w.put_meta("step_in_epoch", at.step_in_epoch.to_string());
    w.put_meta("global_step", at.global_step.to_string());
}

/// The loader of one epoch from `at` on: the rest of the epoch's order, with each sample's
/// generator keyed by its position in the whole epoch.
fn epoch_loader<T: Send + 'static>(
    data: &Arc<dyn Dataset>,
    cfg: &RunConfig,
    at: Position,
    transform: Transform<T>,
) -> Result<Loader<T>> {
    let order = epoch_order(data.len(), cfg.seed, at.epoch as u64);
    let skip = at.step_in_epoch * cfg.batch_size;
    let mut lc = LoaderConfig::new(cfg.batch_size, workers(cfg));
    lc.seed = epoch_seed(cfg.seed, at.epoch as u64);
    lc.drop_last = true;
    lc.skip_bad = cfg.data.skip_bad;
    lc.first_position = skip;
    Loader::new(
        data.clone(),
        order[skip.min(order.len())..].to_vec(),
        transform,
        lc,
    )
}

/// The trained model of either variant as a checkpoint stores it: parameters, batch-norm
/// statistics (with torchvision's counters), SGD velocity and step count.
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
    w.put_set(backend, params, &weights.velocity, "optimizer.velocity.")?;
    w.put_meta("optimizer_steps", weights.steps().to_string());
    Ok(())
}

/// The inverse of [`put_trainable`].
fn get_trainable<B: Backend<Elem = f32>>(
    ckpt: &Checkpoint,
    backend: &B,
    (params, state): (&TensorLayout, &TensorLayout),
    weights: &mut Trainable<B>,
    statistics: &mut TensorSet<B>,
) -> Result<()> {
    ckpt.get_set(backend, params, &mut weights.params, "")?;
    ckpt.get_set(backend, state, statistics, "")?;
    ckpt.get_set(
        backend,
        params,
        &mut weights.velocity,
        "optimizer.velocity.",
    )?;
    weights.set_steps(
        ckpt.meta("optimizer_steps")?
            .parse()
            .context("optimizer_steps")?,
    );
    Ok(())
}

fn train_contrastive<B: Backend<Elem = f32>>(
    backend: &B,
    cfg: &RunConfig,
    out: &Path,
    resume: bool,
    stop_after: Option<u64>,
    data: Arc<dyn Dataset>,
    steps_per_epoch: usize,
) -> Result<PathBuf> {
    let encoder: Encoder = model::encoder(cfg)?;
    let num_classes = data.num_classes();
    let (b, s, cs, c) = (cfg.batch_size, cfg.image_size, cfg.crop_size, cfg.crops);
    let pbsd = cfg.pbsd_weight > 0.0;
    // Checkpoint: parameters, key encoder, velocity (3x), statistics, queue.
    let ckpt_bytes = 4 * (3 * encoder.params.total_len() + cfg.queue * (cfg.embedding_dim + 1));
    prepare_out(out, ckpt_bytes)?;

    let step_cfg = model::dscl_config(cfg);
    let mut step = DsclStep::new(
        backend,
        &encoder,
        step_cfg,
        StepShape {
            batch: b,
            image_size: s,
            crop_size: cs,
            num_classes: num_classes as u32,
        },
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
        at = position_of(&ckpt)?;
        let layouts = (&encoder.params, &encoder.state);
        get_trainable(&ckpt, backend, layouts, &mut m.query, &mut m.query_state)?;
        ckpt.get_set(backend, &encoder.params, &mut m.key_params, "key_encoder.")?;
        ckpt.get_set(backend, &encoder.state, &mut m.key_state, "key_encoder.")?;
        if cfg.queue > 0 {
            let (_, keys) = ckpt.get_f32("queue.keys")?;
            let (_, labels) = ckpt.get_u32("queue.labels")?;
            backend.upload(&mut m.queue.keys, 0, &keys)?;
            backend.upload_index(&mut m.queue.labels, 0, &labels)?;
            m.queue.set_position(
                ckpt.meta("queue_filled")?.parse().context("queue_filled")?,
                ckpt.meta("queue_next")?.parse().context("queue_next")?,
            )?;
        }
        eprintln!(
            "resuming from {} at epoch {} step {}",
            ckpt.path().display(),
            at.epoch + 1,
            at.step_in_epoch
        );
    }

    let save = |m: &DsclModel<B>, at: Position| -> Result<()> {
        let mut w = CheckpointWriter::new();
        let layouts = (&encoder.params, &encoder.state);
        put_trainable(&mut w, backend, layouts, &m.query, &m.query_state, at)?;
        w.put_set(backend, &encoder.params, &m.key_params, "key_encoder.")?;
        w.put_set(backend, &encoder.state, &m.key_state, "key_encoder.")?;
        if cfg.queue > 0 {
            let d = cfg.embedding_dim;
            let mut keys = vec![0.0f32; cfg.queue * d];
            let mut labels = vec![0u32; cfg.queue];
            backend.download(&m.queue.keys, 0, &mut keys)?;
            backend.download_index(&m.queue.labels, 0, &mut labels)?;
            w.put_f32("queue.keys", &[cfg.queue, d], &keys)?;
            w.put_u32("queue.labels", &[cfg.queue], &labels)?;
        }
        w.put_meta("queue_filled", m.queue.filled().to_string());
        w.put_meta("queue_next", m.queue.next_row().to_string());
        w.put_meta("num_classes", num_classes.to_string());
        w.put_meta(
            "class_counts",
            json!(class_counts(data.as_ref())).to_string(),
        );
        put_position(&mut w, cfg, "stage1", at);
        w.write_atomic(&out.join(STAGE1_FILE))
    };

    // Shared by the step and the checkpoint writer, which the epoch driver calls in turn.
    let m = RefCell::new(m);
    let aug = augment_config(cfg);
    let transform: Transform<Stage1Views> =
        Arc::new(move |img, rng| Ok(stage1_views(img, &aug, rng)));
    let (mut q, mut k) = (vec![0.0f32; b * 3 * s * s], vec![0.0f32; b * 3 * s * s]);
    let mut crops = vec![0.0f32; c * b * 3 * cs * cs];
    let mut boxes = vec![0.0f32; c * b * 5];
    let (mut q_buf, mut k_buf) = (backend.alloc(q.len())?, backend.alloc(k.len())?);
    let mut crops_buf = backend.alloc(crops.len().max(1))?;
    let mut boxes_buf = backend.alloc(boxes.len().max(1))?;
    let mut labels_buf = backend.alloc_index(b)?;
    // Slot j of the key batch holds image shuffle[j]: the identity with one replica group.
    let mut shuffle: Vec<u32> = (0..b as u32).collect();

    let mut take_step = |batch: &Batch<Stage1Views>, lr: f64, at: Position| -> Result<Value> {
        let (qi, ki) = (3 * s * s, 3 * cs * cs);
        if batch.items.len() != b {
            bail!(
                "a stage-1 batch of {} images where {b} were planned",
                batch.items.len()
            );
        }
        // With several replica groups the key images go in at their shuffled slots, for the
        // key encoder's shuffled batch norm (batches are full: the loader drops the last).
        let shuffled = cfg.replicas > 1;
        if shuffled {
            key_shuffle(cfg.seed, at.global_step, &mut shuffle);
        }
        for (slot, &image) in shuffle.iter().enumerate() {
            k[slot * qi..(slot + 1) * qi].copy_from_slice(&batch.items[image as usize].key);
        }
        for (i, v) in batch.items.iter().enumerate() {
            q[i * qi..(i + 1) * qi].copy_from_slice(&v.query);
            if pbsd {
                for ci in 0..c {
                    let row = ci * b + i;
                    crops[row * ki..(row + 1) * ki].copy_from_slice(&v.crops[ci]);
                    let [x1, y1, x2, y2] = v.boxes[ci];
                    boxes[row * 5..row * 5 + 5].copy_from_slice(&[i as f32, x1, y1, x2, y2]);
                }
            }
        }
        backend.upload(&mut q_buf, 0, &q)?;
        backend.upload(&mut k_buf, 0, &k)?;
        if pbsd {
            backend.upload(&mut crops_buf, 0, &crops)?;
            backend.upload(&mut boxes_buf, 0, &boxes)?;
        }
        backend.upload_index(&mut labels_buf, 0, &batch.labels)?;
        let key_shuffle = shuffled.then_some(&shuffle[..]);
        let batch = DsclBatch {
            queries: &q_buf,
            keys: &k_buf,
            crops: &crops_buf,
            crop_boxes: &boxes_buf,
            labels: &labels_buf,
            key_shuffle,
        };
        let losses = step
            .step(backend, &encoder, &mut m.borrow_mut(), &batch, lr)
            .with_context(|| {
                format!(
                    "stage-1 step {} (epoch {})",
                    at.global_step + 1,
                    at.epoch + 1
                )
            })?;
        Ok(json!({
            "loss": losses.total,
            "contrastive": losses.contrastive,
            "pbsd": losses.pbsd,
        }))
    };
    let mut save_at = |at: Position| save(&m.borrow(), at);
    drive_epochs(
        cfg,
        &data,
        out,
        "stage1",
        at,
        steps_per_epoch,
        stop_after,
        transform,
        &mut take_step,
        &mut save_at,
    )?;
    Ok(out.join(STAGE1_FILE))
}

fn train_cross_entropy<B: Backend<Elem = f32>>(
    backend: &B,
    cfg: &RunConfig,
    out: &Path,
    resume: bool,
    stop_after: Option<u64>,
    data: Arc<dyn Dataset>,
    steps_per_epoch: usize,
) -> Result<PathBuf> {
    let num_classes = data.num_classes();
    let net: ResNetClassifier = model::classifier(cfg, num_classes)?;
    let (b, s) = (cfg.batch_size, cfg.image_size);
    prepare_out(out, 8 * net.params.total_len())?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let mut weights = Trainable::initialised(backend, &net.params, &mut rng)?;
    let mut state = TensorSet::initialised(backend, &net.state, &mut rng)?;
    let mut step = ClassifierStep::new(backend, &net.backbone, &net.fc, b, s)?;
    let mut at = Position::default();
    if let Some(ckpt) = resume_from(out, cfg, resume)? {
        at = position_of(&ckpt)?;
        get_trainable(
            &ckpt,
            backend,
            (&net.params, &net.state),
            &mut weights,
            &mut state,
        )?;
    }
    let save = |weights: &Trainable<B>, state: &TensorSet<B>, at: Position| -> Result<()> {
        let mut w = CheckpointWriter::new();
        put_trainable(
            &mut w,
            backend,
            (&net.params, &net.state),
            weights,
            state,
            at,
        )?;
        w.put_meta("num_classes", num_classes.to_string());
        w.put_meta(
            "class_counts",
            json!(class_counts(data.as_ref())).to_string(),
        );
        put_position(&mut w, cfg, "ce", at);
        w.write_atomic(&out.join(STAGE1_FILE))
    };
    let (weights, state) = (RefCell::new(weights), RefCell::new(state));
    let mut aug = augment_config(cfg);
    // The supervised baseline: RandomResizedCrop + flip; the colour operations of `stage2` are
    // the official linear classifier's.
    aug.stage2 = aug.stage2.without_colour();
    let transform: Transform<Vec<f32>> = Arc::new(move |img, rng| Ok(stage2_view(img, &aug, rng)));
    let mut x = vec![0.0f32; b * 3 * s * s];
    let mut x_buf = backend.alloc(x.len())?;
    let mut labels_buf = backend.alloc_index(b)?;
    let sgd = model::sgd(cfg);
    let mut take_step = |batch: &Batch<Vec<f32>>, lr: f64, at: Position| -> Result<Value> {
        let n = 3 * s * s;
        for (i, v) in batch.items.iter().enumerate() {
            x[i * n..(i + 1) * n].copy_from_slice(v);
        }
        backend.upload(&mut x_buf, 0, &x)?;
        backend.upload_index(&mut labels_buf, 0, &batch.labels)?;
        let mut weights = weights.borrow_mut();
        let loss = step
            .cross_entropy_step(
                backend,
                &net.backbone,
                &net.fc,
                &mut weights,
                &mut state.borrow_mut(),
                &x_buf,
                &labels_buf,
                &sgd,
                lr,
            )
            .with_context(|| format!("cross-entropy step {}", at.global_step + 1))?;
        Ok(json!({ "loss": loss }))
    };
    let mut save_at = |at: Position| save(&weights.borrow(), &state.borrow(), at);
    drive_epochs(
        cfg,
        &data,
        out,
        "stage1-ce",
        at,
        steps_per_epoch,
        stop_after,
        transform,
        &mut take_step,
        &mut save_at,
    )?;
    Ok(out.join(STAGE1_FILE))
}

/// One training step on a batch at a learning rate; returns the fields to show and log.
type StepFn<'a, T> = dyn FnMut(&Batch<T>, f64, Position) -> Result<Value> + 'a;

/// The epoch loop both stage-1 variants share: per epoch a loader from `at` on, one
/// `take_step(batch, lr, at)` per batch (returning the fields to show and log), progress and
/// the log, checkpoints every `--checkpoint-every` steps and at each epoch's end, and the
/// `--stop-after` exit.
#[allow(clippy::too_many_arguments)]
fn drive_epochs<T: Send + 'static>(
    cfg: &RunConfig,
    data: &Arc<dyn Dataset>,
    out: &Path,
    phase: &str,
    mut at: Position,
    steps_per_epoch: usize,
    stop_after: Option<u64>,
    transform: Transform<T>,
    take_step: &mut StepFn<'_, T>,
    save: &mut dyn FnMut(Position) -> Result<()>,
) -> Result<()> {
    let schedule = LrSchedule::WarmupCosine {
        lr: cfg.lr,
        warmup_epochs: cfg.warmup_epochs as f64,
        epochs: cfg.epochs as f64,
    };
    let total = (cfg.epochs * steps_per_epoch) as u64;
    let done = (at.epoch * steps_per_epoch + at.step_in_epoch) as u64;
    // The log continues from `at`: records an interrupted attempt wrote after its last
    // checkpoint, and any later phase's, are dropped, so no step is logged twice.
    let kept = retain_log(&out.join(LOG_FILE), |record| {
        record["phase"] == phase
            && match record["kind"].as_str() {
                Some("step") => record["global_step"]
                    .as_u64()
                    .is_some_and(|step| step <= at.global_step),
                // An epoch record is written when its epoch ends, numbered as the epochs
                // done by then (the position's epoch).
                Some("epoch") => record["epoch"]
                    .as_u64()
                    .is_some_and(|done| done as usize <= at.epoch),
                _ => false,
            }
    })?;
    let mut progress = Progress::new(phase, total, done, Some(&out.join(LOG_FILE)))?;
    let mut taken = 0u64;
    let stopped = |progress: &Progress, taken: u64| {
        progress.finish();
        eprintln!("stopped after {taken} steps (--stop-after); continue with --resume");
    };
    // A run resumed mid-epoch takes the epoch's earlier losses from the log, so the epoch's
    // mean covers all its steps.
    let epoch_start = at.global_step - at.step_in_epoch as u64;
    let earlier: Vec<f64> = kept
        .iter()
        .filter(|r| r["kind"] == "step")
        .filter(|r| r["global_step"].as_u64().is_some_and(|s| s > epoch_start))
        .filter_map(|r| r["loss"].as_f64())
        .collect();
    let mut carried = (earlier.iter().sum::<f64>(), earlier.len());
    while at.epoch < cfg.epochs {
        let mut loader = epoch_loader(data, cfg, at, transform.clone())?;
        let (mut sum, mut count) = std::mem::take(&mut carried);
        for batch in loader.by_ref() {
            let batch = batch?;
            // Per step at the fractional epoch, as the official loop calls
            // `adjust_learning_rate(optimizer, epoch + i / iters_per_epoch, args)`: 0 at the
            // very first step, rising every step through the warm-up.
            let lr =
                schedule.lr_at(at.epoch as f64 + at.step_in_epoch as f64 / steps_per_epoch as f64);
            let mut fields = take_step(&batch, lr, at)?;
            at.step_in_epoch += 1;
            at.global_step += 1;
            taken += 1;
            sum += fields["loss"].as_f64().unwrap_or(f64::NAN);
            count += 1;
            if let Value::Object(map) = &mut fields {
                map.insert("epoch".into(), json!(at.epoch + 1));
                map.insert("global_step".into(), json!(at.global_step));
                map.insert("lr".into(), json!(lr));
            }
            progress.step(batch.len() as u64, fields)?;
            let mid_epoch = at.step_in_epoch < steps_per_epoch;
            let stop = mid_epoch && stop_after == Some(taken);
            let periodic = cfg.checkpoint_every > 0
                && at.global_step.is_multiple_of(cfg.checkpoint_every as u64);
            let signal = interrupt::requested().filter(|_| mid_epoch);
            if mid_epoch && (stop || periodic || signal.is_some()) {
                save(at)?;
            }
            if let Some(signal) = signal {
                progress.finish();
                return Err(interrupted(signal, out, at).into());
            }
            if stop {
                stopped(&progress, taken);
                return Ok(());
            }
        }
        if loader.skipped() > 0 {
            progress.println(&format!(
                "epoch {}: skipped {} unreadable images",
                at.epoch + 1,
                loader.skipped()
            ));
        }
        at.epoch += 1;
        at.step_in_epoch = 0;
        save(at)?;
        let mean = if count > 0 {
            sum / count as f64
        } else {
            f64::NAN
        };
        progress.record(json!({"kind": "epoch", "epoch": at.epoch, "loss": mean}))?;
        progress.println(&format!(
            "{phase} epoch {}/{}: mean loss {mean:.4}",
            at.epoch, cfg.epochs
        ));
        if let Some(signal) = interrupt::requested().filter(|_| at.epoch < cfg.epochs) {
            progress.finish();
            return Err(interrupted(signal, out, at).into());
        }
        if stop_after.is_some_and(|n| taken >= n) && at.epoch < cfg.epochs {
            stopped(&progress, taken);
            return Ok(());
        }
    }
    progress.finish();
    Ok(())
}

/// What a signal leaves: the checkpoint just written at `at`.
fn interrupted(signal: i32, out: &Path, at: Position) -> Interrupted {
    Interrupted {
        signal,
        saved: format!(
            "{} holds step {} (epoch {}, step {} of it)",
            out.join(STAGE1_FILE).display(),
            at.global_step,
            at.epoch + 1,
            at.step_in_epoch
        ),
    }
}
