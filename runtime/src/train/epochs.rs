//! The epoch driver every stage runs under. Per epoch, in this order:
//!
//! 1. the epoch's loader: its sample order (shuffled, or class-balanced) from the position on,
//!    every sample's generator keyed by its position in the whole epoch;
//! 2. per batch: the learning rate at the fractional epoch, the stage's step, the step's record
//!    shown and logged; then, for a stage that checkpoints, a checkpoint every
//!    `--checkpoint-every` steps, at `--stop-after` and at a signal, and the stop; for a stage
//!    that starts over, the stop at a signal;
//! 3. at the epoch's end: the unreadable images skipped reported, the checkpoint of a stage
//!    that keeps them, the epoch's record (the mean loss of all its steps, those before a
//!    resume included), the stage's own end of epoch (stage 1 prints the mean, stage 2
//!    evaluates), and a stop asked for by a signal or `--stop-after`.
//!
//! Before the first epoch the log is made to continue from where the stage starts: a stage that
//! resumes keeps its own records up to its checkpoint (an interrupted attempt's later records,
//! and any later phase's, are dropped, so no step is logged twice); a stage that starts over
//! drops its own earlier records and keeps the other phases'.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use dscl_core::train::LrSchedule;

use super::report::{EpochRecord, StepRecord, StepReport};
use super::Position;
use crate::cluster::Cluster;
use crate::config::RunConfig;
use crate::data::{
    class_balanced_order, epoch_order, epoch_seed, workers, Batch, Dataset, Loader, LoaderConfig,
    Needed, Transform,
};
use crate::interrupt::{self, Interrupted};
use crate::io::log::{self, LogRecord};
use crate::io::progress::Progress;

/// One stage as the driver runs it.
pub trait Stage {
    /// What the loader makes of each image for the step.
    type Item: Send + 'static;
    type Report: StepReport;

    /// Turns a decoded image into the step's item.
    fn transform(&self) -> Transform<Self::Item>;

    /// The slots of every batch this process uses, when not all of them: a rank of a
    /// data-parallel run uses its own group's (and stage 1 its key slots' images), and the
    /// loader leaves the others undecoded.
    fn needs(&self) -> Option<SlotsNeeded> {
        None
    }

    /// One step on `batch` at learning rate `lr`, from position `at`; the slots
    /// [`Stage::needs`] leaves out are `None`.
    fn step(
        &mut self,
        batch: &Batch<Option<Self::Item>>,
        lr: f64,
        at: Position,
    ) -> Result<Self::Report>;

    /// Writes the checkpoint of position `at` (only called under [`Resumption::Checkpoints`]).
    fn save(&mut self, at: Position) -> Result<()>;

    /// What a stop at `at` leaves saved, for the message.
    fn saved(&self, at: Position) -> String;

    /// After the record of the epoch that made `epochs_done` of `plan`'s epochs, with its
    /// mean loss.
    fn epoch_done(
        &mut self,
        plan: &Plan<'_>,
        epochs_done: usize,
        mean: f64,
        progress: &Progress,
    ) -> Result<()>;
}

/// Whether this process uses slot `slot` of the batch of global step `step`: the arguments
/// of the closure, in that order.
pub type SlotsNeeded = Arc<dyn Fn(u64, usize) -> bool + Send + Sync>;

/// How a stage draws each epoch's samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// Every image once, in an order drawn from (seed, epoch); the views from the run's seed.
    Shuffled,
    /// Class-balanced draws (a class uniformly, then an image), as many as the epoch's steps
    /// take, their order drawn from (seed, epoch); the views from a seed of their own, so they
    /// differ from stage 1's.
    ClassBalanced,
}

/// The seed stage 2 mixes into the run's seed for its classifier's initial weights and its
/// views.
pub const STAGE2_SEED: u64 = 0x5EED_0002;

/// How a stage survives an interruption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumption {
    /// Stage 1: a checkpoint at every epoch's end, every `every` steps (0: none between), after
    /// the `stop_after`-th step of this invocation and at a signal; `--resume` continues from
    /// the last.
    Checkpoints {
        every: usize,
        stop_after: Option<u64>,
    },
    /// Stage 2: short, and saved only when done; a signal stops it after its step, and it
    /// starts over when run again.
    StartsOver,
}

/// A stage's epochs: its data and batches, schedule, sampling and resumption.
pub struct Plan<'a> {
    /// The phase its log records and progress carry.
    pub phase: &'static str,
    pub cfg: &'a RunConfig,
    pub data: &'a Arc<dyn Dataset>,
    pub batch: usize,
    pub epochs: usize,
    pub steps_per_epoch: usize,
    pub schedule: LrSchedule,
    pub sampling: Sampling,
    pub resumption: Resumption,
    /// The run's output directory, which holds the log.
    pub out: &'a Path,
    /// This process's part of its run: rank 0 (or the one process) writes the log and shows
    /// progress; the other ranks only train.
    pub cluster: &'a Cluster,
}

impl Plan<'_> {
    pub fn writes(&self) -> bool {
        self.cluster.writes()
    }

    /// The signal that asks the run to stop, as every rank agrees on: a signal reaches the
    /// ranks at different steps, and each must stop at the same one (the step's collectives
    /// and the checkpoint's check are made together).
    fn signal(&self) -> Result<Option<i32>> {
        self.cluster.agree_on_signal(interrupt::requested())
    }
}

/// Runs `stage` through `plan`'s epochs from position `at`; returns where it ended (the end
/// of the last epoch, or where `--stop-after` stopped it).
pub fn run<S: Stage>(stage: &mut S, plan: &Plan<'_>, mut at: Position) -> Result<Position> {
    let steps = plan.steps_per_epoch;
    let total = (plan.epochs * steps) as u64;
    let done = (at.epoch * steps + at.step_in_epoch) as u64;
    let log_path = plan.out.join(log::LOG_FILE);
    let kept = match plan.resumption {
        // Only the epoch means shown use the records kept, and only the writer shows them.
        _ if !plan.writes() => Vec::new(),
        Resumption::Checkpoints { .. } => log::retain(&log_path, |r| {
            r.phase.as_deref() == Some(plan.phase)
                && match r.kind.as_deref() {
                    Some("step") => r.global_step.is_some_and(|step| step <= at.global_step),
                    // An epoch record is written when its epoch ends, numbered as the epochs
                    // done by then (the position's epoch).
                    Some("epoch") => r.epoch.is_some_and(|done| done as usize <= at.epoch),
                    _ => false,
                }
        })?,
        Resumption::StartsOver => {
            log::retain(&log_path, |r| r.phase.as_deref() != Some(plan.phase))?
        }
    };
    let log = plan.writes().then_some(log_path.as_path());
    let mut progress = Progress::new(plan.phase, total, done, log)?;
    if !plan.writes() {
        progress = progress.silenced();
    }
    let transform = stage.transform();
    let needs = stage.needs();
    let mut taken = 0u64;
    let stopped = |progress: &Progress, taken: u64| {
        progress.finish();
        eprintln!("stopped after {taken} steps (--stop-after); continue with --resume");
    };
    // Every rank waits for the others (rank 0 writing the checkpoint) before it stops: a rank
    // that ended first would have the launcher end the job under rank 0's write.
    let interrupted = |progress: &Progress, stage: &S, signal: i32, at: Position| {
        progress.finish();
        plan.cluster.barrier()?;
        anyhow::Ok(Interrupted {
            signal,
            saved: stage.saved(at),
        })
    };
    // A run resumed mid-epoch takes the epoch's earlier losses from the log, so the epoch's
    // mean covers all its steps.
    let mut carried = earlier_losses(&kept, plan.phase, at);
    while at.epoch < plan.epochs {
        let mut loader = epoch_loader(plan, at, transform.clone(), needs.clone())?;
        let (mut sum, mut count) = std::mem::take(&mut carried);
        for batch in loader.by_ref() {
            let batch = batch?;
            // Per step at the fractional epoch, as the official loop calls
            // `adjust_learning_rate(optimizer, epoch + i / iters_per_epoch, args)`: 0 at the
            // very first step, rising every step through the warm-up.
            let lr = plan
                .schedule
                .lr_at(at.epoch as f64 + at.step_in_epoch as f64 / steps as f64);
            let report = stage.step(&batch, lr, at)?;
            at.step_in_epoch += 1;
            at.global_step += 1;
            taken += 1;
            // The log holds a non-finite loss as null, which the mean counts as unknown.
            let loss = report.loss();
            sum += if loss.is_finite() { loss } else { f64::NAN };
            count += 1;
            let record = StepRecord {
                report: &report,
                epoch: at.epoch + 1,
                global_step: at.global_step,
                lr,
            };
            progress.step(batch.len() as u64, &record)?;
            let mid_epoch = at.step_in_epoch < steps;
            match plan.resumption {
                Resumption::Checkpoints { every, stop_after } => {
                    let stop = mid_epoch && stop_after == Some(taken);
                    let periodic = every > 0 && at.global_step.is_multiple_of(every as u64);
                    // A signal at an epoch's last step waits for the epoch's checkpoint.
                    let signal = plan.signal()?.filter(|_| mid_epoch);
                    if mid_epoch && (stop || periodic || signal.is_some()) {
                        stage.save(at)?;
                    }
                    if let Some(signal) = signal {
                        return Err(interrupted(&progress, stage, signal, at)?.into());
                    }
                    if stop {
                        stopped(&progress, taken);
                        return Ok(at);
                    }
                }
                Resumption::StartsOver => {
                    if let Some(signal) = plan.signal()? {
                        return Err(interrupted(&progress, stage, signal, at)?.into());
                    }
                }
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
        if let Resumption::Checkpoints { .. } = plan.resumption {
            stage.save(at)?;
        }
        let mean = if count > 0 {
            sum / count as f64
        } else {
            f64::NAN
        };
        progress.record(&EpochRecord {
            epoch: at.epoch,
            loss: mean,
        })?;
        stage.epoch_done(plan, at.epoch, mean, &progress)?;
        if let Resumption::Checkpoints { stop_after, .. } = plan.resumption {
            let more = at.epoch < plan.epochs;
            if let Some(signal) = plan.signal()?.filter(|_| more) {
                return Err(interrupted(&progress, stage, signal, at)?.into());
            }
            if stop_after.is_some_and(|n| taken >= n) && more {
                stopped(&progress, taken);
                return Ok(at);
            }
        }
    }
    progress.finish();
    Ok(at)
}

/// The sum and number of the losses `phase` logged in the epoch of `at` before `at`.
fn earlier_losses(kept: &[LogRecord], phase: &str, at: Position) -> (f64, usize) {
    let epoch_start = at.global_step.saturating_sub(at.step_in_epoch as u64);
    let earlier: Vec<f64> = kept
        .iter()
        .filter(|r| r.is(phase, "step"))
        .filter(|r| r.global_step.is_some_and(|s| s > epoch_start))
        .filter_map(|r| r.loss)
        .collect();
    (earlier.iter().sum::<f64>(), earlier.len())
}

/// The loader of one epoch from `at` on: the rest of the epoch's order, with each sample's
/// generator keyed by its position in the whole epoch, loading only the slots `needs` names.
/// With `--skip-bad` every slot is loaded: a skipped image shifts the later batches, and only
/// a process that loaded it knows.
fn epoch_loader<T: Send + 'static>(
    plan: &Plan<'_>,
    at: Position,
    transform: Transform<T>,
    needs: Option<SlotsNeeded>,
) -> Result<Loader<Option<T>>> {
    let (cfg, data) = (plan.cfg, plan.data);
    let epoch = at.epoch as u64;
    let (order, views_seed) = match plan.sampling {
        Sampling::Shuffled => (epoch_order(data.len(), cfg.seed, epoch), cfg.seed),
        Sampling::ClassBalanced => (
            class_balanced_order(
                data.labels(),
                data.num_classes(),
                plan.steps_per_epoch * plan.batch,
                cfg.seed,
                epoch,
            ),
            cfg.seed ^ STAGE2_SEED,
        ),
    };
    let skip = at.step_in_epoch * plan.batch;
    let mut lc = LoaderConfig::new(plan.batch, workers(cfg));
    lc.seed = epoch_seed(views_seed, epoch);
    lc.drop_last = true;
    lc.skip_bad = cfg.data.skip_bad;
    lc.first_position = skip;
    // Batch t of this loader is the step at global step `at.global_step + t` (full batches:
    // the last partial one is dropped).
    let (first_step, batch) = (at.global_step, plan.batch);
    let needed = needs.filter(|_| !cfg.data.skip_bad).map(|needs| -> Needed {
        Arc::new(move |p| needs(first_step + (p / batch) as u64, p % batch))
    });
    Loader::needing(
        data.clone(),
        order[skip.min(order.len())..].to_vec(),
        transform,
        lc,
        needed,
    )
}
