//! `runtime train`'s work, stage 1: DSCL (or SupCon) + PBSD with a momentum encoder and a
//! queue ([`super::contrastive`]), or, with `--loss ce`, the cross-entropy baseline trained end
//! to end ([`super::cross_entropy`]).
//!
//! Checkpoints go to `OUT/stage1.safetensors` at the end of every epoch (and every
//! `--checkpoint-every` steps), atomically. `--resume` continues from it exactly: the sample
//! order and every augmentation are functions of (seed, epoch, position), and everything the
//! step carries (parameters, momentum encoder, velocity, queue, batch-norm statistics) is in
//! the checkpoint, so the losses after a resume equal those of an uninterrupted run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use dscl_core::train::LrSchedule;

use super::epochs::{Plan, Resumption, Sampling};
use super::{contrastive, cross_entropy, Position};
use crate::cluster::{Cluster, TrainBackend};
use crate::config::{LossKind, RunConfig};
use crate::data::{class_counts, Dataset};
use crate::io::checkpoint::{remove_stale_temporaries, schema, Checkpoint};
use crate::io::log::phase;
use crate::io::out_dir::{self, STAGE1_FILE};
use crate::io::progress::Progress;

/// Trains on `data`, the training set of `cfg` as [`open_train`](crate::data::open_train)
/// opens it (the command opens it before the backend, so bad data is refused before a device
/// starts).
///
/// `stop_after`: end this invocation after that many steps, with a checkpoint written, so a
/// time-boxed job can continue later with `--resume`.
///
/// `cluster`: this process's rank of a distributed run (its replica group of every batch;
/// rank 0 alone writes), or [`Cluster::Solo`].
#[allow(clippy::too_many_arguments)]
pub fn train<B: TrainBackend>(
    backend: &B,
    cluster: &Cluster,
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
    let writes = cluster.writes();
    if writes {
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
    }
    let plan = Plan {
        phase: match cfg.loss {
            LossKind::Ce => phase::STAGE1_CE,
            LossKind::Dscl | LossKind::Scl => phase::STAGE1,
        },
        cfg,
        data: &data,
        batch: cfg.batch_size,
        epochs: cfg.epochs,
        steps_per_epoch,
        schedule: LrSchedule::WarmupCosine {
            lr: cfg.lr,
            warmup_epochs: cfg.warmup_epochs as f64,
            epochs: cfg.epochs as f64,
        },
        sampling: Sampling::Shuffled,
        resumption: Resumption::Checkpoints {
            every: cfg.checkpoint_every,
            stop_after,
        },
        out,
        cluster,
    };
    match cfg.loss {
        LossKind::Ce => cross_entropy::train(backend, cluster, plan, resume)?,
        LossKind::Dscl | LossKind::Scl => contrastive::train(backend, cluster, plan, resume)?,
    }
    Ok(out.join(STAGE1_FILE))
}

/// Before any step: removes what interrupted checkpoint writes left in `out`, then proves
/// `out` writable with room for the run's checkpoints of about `checkpoint_bytes` each.
pub(super) fn prepare_out(out: &Path, checkpoint_bytes: usize) -> Result<()> {
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
pub(super) fn resume_from(out: &Path, cfg: &RunConfig, resume: bool) -> Result<Option<Checkpoint>> {
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
    let saved = schema::config(&ckpt)?;
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

/// What a stop at `at` leaves: the checkpoint just written there.
pub(super) fn saved_at(out: &Path, at: Position) -> String {
    format!(
        "{} holds step {} (epoch {}, step {} of it)",
        out.join(STAGE1_FILE).display(),
        at.global_step,
        at.epoch + 1,
        at.step_in_epoch
    )
}

/// Stage 1's end of an epoch: the mean loss of its steps.
pub(super) fn show_epoch(plan: &Plan<'_>, epochs_done: usize, mean: f64, progress: &Progress) {
    progress.println(&format!(
        "{} epoch {epochs_done}/{}: mean loss {mean:.4}",
        plan.phase, plan.epochs
    ));
}
