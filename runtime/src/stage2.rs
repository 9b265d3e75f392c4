//! `runtime linear`: stage 2. A new linear classifier on the frozen stage-1 backbone, trained
//! with cross-entropy on class-balanced batches (pick a class uniformly, then an image). As in
//! the official code (`equal_lincls.py`) the classifier starts from weights drawn from
//! N(0, 0.01) and a zero bias, and the backbone's batch norm stays in training mode, so its
//! running statistics are re-estimated on these images (stage 1 last set them on the small
//! crops); the backbone's weights do not change.
//!
//! The backbone may also be that of a `--loss ce` run: classifier re-training (cRT, Kang et
//! al., "Decoupling representation and classifier for long-tailed recognition", ICLR 2020),
//! the decoupling baseline, with the same class-balanced recipe.
//!
//! With `--eval-every-epoch` the model is evaluated on the test set after every epoch, as the
//! official stage 2 does; the epochs and the best of them (selected on the test set, as the
//! official `best_acc1`) go to `OUT/linear_epochs.json`, the final model's metrics to
//! `OUT/metrics.json`.
//!
//! Writes `OUT/linear.safetensors`: the backbone, its re-estimated statistics and `fc`, under
//! torchvision's names, ready for `runtime eval`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use dscl_core::nn::{LinearClassifier, TensorSet};
use dscl_core::train::{ClassifierStep, LrSchedule, SgdConfig, Trainable};
use dscl_core::Backend;
use rand::rngs::Xoshiro256PlusPlus;
use rand::SeedableRng;
use serde_json::json;

use crate::augment::stage2_view;
use crate::backend_choice::BackendChoice;
use crate::config::{EvalArgs, LinearArgs, RunConfig};
use crate::data::{
    class_balanced_order, class_counts, epoch_seed, open_train, workers, Loader, LoaderConfig,
    Transform,
};
use crate::evaluate::{TestPass, METRICS_FILE};
use crate::interrupt::{self, Interrupted};
use crate::io::checkpoint::{
    put_batch_counters, remove_stale_temporaries, Checkpoint, CheckpointWriter,
};
use crate::io::out_dir;
use crate::io::progress::{retain_log, Progress};
use crate::io::write_report;
use crate::memory;
use crate::metrics::{Metrics, Stage2Epochs};
use crate::model;
use crate::stage1::{augment_config, LOG_FILE};

pub const LINEAR_FILE: &str = "linear.safetensors";
/// The per-epoch test-set evaluations of `--eval-every-epoch`.
pub const EPOCHS_FILE: &str = "linear_epochs.json";

/// What stage 2 made.
pub struct Stage2 {
    /// `OUT/linear.safetensors`.
    pub checkpoint: PathBuf,
    /// With `--eval-every-epoch`: every epoch's test-set evaluation and the best of them.
    pub epochs: Option<Stage2Epochs>,
    /// With `--eval-every-epoch`: the final model's metrics (those of `OUT/metrics.json`).
    pub final_metrics: Option<Metrics>,
}

/// The fresh stage-2 classifier, drawn from `seed` as the official code initialises its `fc`
/// (weights N(0, 0.01), bias 0; see [`LinearClassifier`]).
pub fn fresh_classifier<B: Backend<Elem = f32>>(
    backend: &B,
    probe: &LinearClassifier,
    seed: u64,
) -> Result<Trainable<B>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5EED_0002);
    Ok(Trainable::initialised(backend, &probe.params, &mut rng)?)
}

/// Trains the classifier on the backbone of `checkpoint` (the stage-1 checkpoint of a
/// contrastive run, or of a `--loss ce` run for cRT) into `out`.
pub fn train<B: Backend<Elem = f32>>(
    backend: &B,
    choice: BackendChoice,
    checkpoint: &Path,
    linear: &LinearArgs,
    eval: &EvalArgs,
    out: &Path,
) -> Result<Stage2> {
    let ckpt = Checkpoint::read(checkpoint)?;
    let stage = ckpt.meta("stage")?.to_string();
    if stage != "stage1" && stage != "ce" {
        bail!(
            "{} is a `{stage}` checkpoint; `runtime linear` needs a stage-1 checkpoint \
             (stage1.safetensors of a contrastive run, or of a --loss ce run for classifier \
             re-training)",
            checkpoint.display()
        );
    }
    let mut cfg = RunConfig::from_json(ckpt.meta("config")?)
        .with_context(|| format!("{}: unreadable config record", checkpoint.display()))?;
    cfg.linear_epochs = linear.linear_epochs.unwrap_or(cfg.linear_epochs);
    cfg.linear_batch_size = linear.linear_batch_size.unwrap_or(cfg.linear_batch_size);
    cfg.linear_lr = linear.linear_lr.unwrap_or(cfg.linear_lr);
    cfg.linear_frozen_bn |= linear.linear_frozen_bn;
    cfg.check_linear()?;
    let data = open_train(&cfg)?;
    let num_classes = data.num_classes();
    memory::check_on(
        &memory::estimate_linear(&cfg, num_classes, data.len())?,
        choice,
    )?;
    let counts = class_counts(data.as_ref());
    let net = model::backbone(&cfg)?;
    let backbone = &net.net;
    let probe = LinearClassifier::new(backbone.feature_channels(), num_classes)?;
    out_dir::prepare(
        out,
        4 * (net.params.total_len() + probe.params.total_len()) + (1 << 20),
    )?;
    remove_stale_temporaries(&out.join(LINEAR_FILE))?;

    // Only the backbone's tensors are read: a contrastive checkpoint's projection head and a
    // cross-entropy checkpoint's own `fc` are left behind.
    let mut params = TensorSet::zeros(backend, &net.params)?;
    let mut state = TensorSet::zeros(backend, &net.state)?;
    ckpt.get_set(backend, &net.params, &mut params, "")?;
    ckpt.get_set(backend, &net.state, &mut state, "")?;
    let mut classifier = fresh_classifier(backend, &probe, cfg.seed)?;
    // Opened before training, so a run without test data stops at once.
    let mut test = if linear.eval_every_epoch {
        Some(TestPass::new(backend, &cfg, backbone, num_classes, false)?)
    } else {
        None
    };
    let mut epochs = Stage2Epochs::new();
    let mut final_metrics = None;

    let b = cfg.linear_batch_size.min(data.len());
    let s = cfg.image_size;
    let steps_per_epoch = data.len().div_ceil(b);
    let mut step = ClassifierStep::new(backend, backbone, &probe.fc, b, s)?;
    step.use_running_statistics(cfg.linear_frozen_bn);
    // x0.1 at half and three quarters of the epochs (the published 20 and 30 of 40).
    let e = cfg.linear_epochs as f64;
    let schedule = LrSchedule::step(cfg.linear_lr, &[e * 0.5, e * 0.75], 0.1)?;
    let sgd = SgdConfig::STAGE2;
    let aug = augment_config(&cfg);
    let transform: Transform<Vec<f32>> = Arc::new(move |img, rng| Ok(stage2_view(img, &aug, rng)));
    let mut x = vec![0.0f32; b * 3 * s * s];
    let mut x_buf = backend.alloc(x.len())?;
    let mut labels_buf = backend.alloc_index(b)?;
    let total = (cfg.linear_epochs * steps_per_epoch) as u64;
    // A repeated stage 2 replaces the earlier one's records (stage 1's stay).
    retain_log(&out.join(LOG_FILE), |record| record["phase"] != "linear")?;
    let mut progress = Progress::new("linear", total, 0, Some(&out.join(LOG_FILE)))?;
    let mut global_step = 0u64;
    if stage == "ce" {
        eprintln!("stage 2 on the backbone of a cross-entropy run: classifier re-training (cRT)");
    }
    eprintln!(
        "stage 2: linear classifier on the frozen backbone, {} epochs of {} class-balanced batches of {b}{}",
        cfg.linear_epochs,
        steps_per_epoch,
        if test.is_some() {
            ", each evaluated on the test set"
        } else {
            ""
        }
    );
    for epoch in 0..cfg.linear_epochs {
        // One epoch draws as many class-balanced samples as the set has images.
        let order = class_balanced_order(
            data.labels(),
            num_classes,
            steps_per_epoch * b,
            cfg.seed,
            epoch as u64,
        );
        let mut lc = LoaderConfig::new(b, workers(&cfg));
        lc.seed = epoch_seed(cfg.seed ^ 0x5EED_0002, epoch as u64);
        lc.drop_last = true;
        lc.skip_bad = cfg.data.skip_bad;
        let loader = Loader::new(data.clone(), order, transform.clone(), lc)?;
        let mut sum = 0.0;
        let mut count = 0;
        for (i, batch) in loader.enumerate() {
            let batch = batch?;
            let n = 3 * s * s;
            for (j, v) in batch.items.iter().enumerate() {
                x[j * n..(j + 1) * n].copy_from_slice(v);
            }
            backend.upload(&mut x_buf, 0, &x)?;
            backend.upload_index(&mut labels_buf, 0, &batch.labels)?;
            let lr = schedule.lr_at(epoch as f64 + i as f64 / steps_per_epoch as f64);
            let loss = step.linear_probe_step(
                backend,
                backbone,
                &params,
                &mut state,
                &probe.fc,
                &mut classifier,
                &x_buf,
                &labels_buf,
                &sgd,
                lr,
            )?;
            global_step += 1;
            sum += loss;
            count += 1;
            progress.step(
                b as u64,
                json!({"epoch": epoch + 1, "global_step": global_step, "loss": loss, "lr": lr}),
            )?;
            // Stage 2 is short and keeps no checkpoint of its own: a signal ends it after this
            // step, and the command is run again (stage 1, if any, stays complete on disk).
            if let Some(signal) = interrupt::requested() {
                progress.finish();
                return Err(Interrupted {
                    signal,
                    saved: "stage 2 is not saved part-way and starts over".into(),
                }
                .into());
            }
        }
        let mean = if count > 0 {
            sum / count as f64
        } else {
            f64::NAN
        };
        progress.record(json!({"kind": "epoch", "epoch": epoch + 1, "loss": mean}))?;
        if let Some(pass) = &mut test {
            let tally = pass.run(
                backend,
                backbone,
                &params,
                &state,
                &probe.fc,
                &classifier.params,
            )?;
            let m = tally.finish(&counts, eval.split_thresholds)?;
            progress.println(&format!(
                "stage 2 epoch {}/{}: loss {mean:.4}, test top-1 {:.2} top-5 {:.2}",
                epoch + 1,
                cfg.linear_epochs,
                m.top1,
                m.top5
            ));
            epochs.push(epoch + 1, mean, &m);
            write_report(out, EPOCHS_FILE, &epochs)?;
            if epoch + 1 == cfg.linear_epochs {
                // The final model's metrics, the same as `runtime eval` of the checkpoint.
                write_report(out, METRICS_FILE, &m)?;
                final_metrics = Some(m);
            }
        }
    }
    progress.finish();

    // The backbone under its names, its re-estimated statistics, and fc: the layout of a
    // torchvision classifier.
    let mut w = CheckpointWriter::new();
    w.put_set(backend, &net.params, &params, "")?;
    w.put_set(backend, &net.state, &state, "")?;
    put_batch_counters(&mut w, &net.state, "", global_step as i64)?;
    w.put_set(backend, &probe.params, &classifier.params, "")?;
    w.put_meta("config", cfg.to_json());
    w.put_meta("stage", "linear");
    // Where the backbone came from: `stage1` (contrastive) or `ce` (cRT).
    w.put_meta("backbone_stage", stage);
    w.put_meta("num_classes", num_classes.to_string());
    w.put_meta("class_counts", json!(counts).to_string());
    let path = out.join(LINEAR_FILE);
    w.write_atomic(&path)?;
    Ok(Stage2 {
        checkpoint: path,
        epochs: test.map(|_| epochs),
        final_metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dscl_core::reference::ReferenceBackend;

    #[test]
    fn the_fresh_classifier_is_the_official_init_drawn_from_the_seed() {
        // ResNet-50's features and ImageNet-LT's classes: 2,048,000 weights.
        let backend = ReferenceBackend::<f32>::new();
        let probe = LinearClassifier::new(2048, 1000).unwrap();
        let host = |t: &Trainable<ReferenceBackend<f32>>, i: usize| {
            let buf = &t.params.buffers()[i];
            let mut v = vec![0.0f32; probe.params.specs()[i].len()];
            backend.download(buf, 0, &mut v).unwrap();
            v
        };
        let c = fresh_classifier(&backend, &probe, 7).unwrap();
        let (w, b) = (
            host(&c, probe.fc.weight.index()),
            host(&c, probe.fc.bias.index()),
        );
        assert_eq!((w.len(), b.len()), (2048 * 1000, 1000));
        let n = w.len() as f64;
        let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        // Standard errors: 7e-6 on the mean, 5e-6 on the std.
        assert!(mean.abs() < 4e-5, "mean {mean}");
        assert!((std - 0.01).abs() < 2e-5, "std {std}");
        // Not uniform: a normal's fourth moment is 3 std^4 (a uniform's 1.8 std^4).
        let kurtosis = w.iter().map(|&v| (v as f64 - mean).powi(4)).sum::<f64>() / n / std.powi(4);
        assert!((kurtosis - 3.0).abs() < 0.05, "kurtosis {kurtosis}");
        assert!(b.iter().all(|&v| v == 0.0), "bias not zero");
        // The seed decides every weight.
        let again = fresh_classifier(&backend, &probe, 7).unwrap();
        assert_eq!(host(&again, probe.fc.weight.index()), w);
        let other = fresh_classifier(&backend, &probe, 8).unwrap();
        assert_ne!(host(&other, probe.fc.weight.index()), w);
    }
}
