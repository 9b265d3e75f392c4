//! `runtime linear`: stage 2. A new linear classifier on the frozen stage-1 backbone, trained
//! with cross-entropy on class-balanced batches (pick a class uniformly, then an image). As in
//! the official code the backbone's batch norm stays in training mode, so its running
//! statistics are re-estimated on these images (stage 1 last set them on the small crops);
//! the backbone's weights do not change.
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
use crate::checkpoint::{
    put_batch_counters, remove_stale_temporaries, Checkpoint, CheckpointWriter,
};
use crate::config::RunConfig;
use crate::data::{class_balanced_order, epoch_seed, Loader, LoaderConfig, Transform};
use crate::datasets::{class_counts, open_train, workers};
use crate::model;
use crate::out_dir;
use crate::progress::Progress;
use crate::stage1::{augment_config, LOG_FILE};

pub const LINEAR_FILE: &str = "linear.safetensors";

/// Trains the classifier on the backbone of `checkpoint` (a stage-1 checkpoint) into `out`.
pub fn train<B: Backend<Elem = f32>>(
    backend: &B,
    checkpoint: &Path,
    linear: &crate::config::LinearArgs,
    out: &Path,
) -> Result<PathBuf> {
    let ckpt = Checkpoint::read(checkpoint)?;
    let stage = ckpt.meta("stage")?;
    if stage != "stage1" {
        bail!(
            "{} is a `{stage}` checkpoint; `runtime linear` needs the stage-1 checkpoint of a \
             contrastive run (stage1.safetensors)",
            checkpoint.display()
        );
    }
    let mut cfg = RunConfig::from_json(ckpt.meta("config")?)
        .with_context(|| format!("{}: unreadable config record", checkpoint.display()))?;
    cfg.linear_epochs = linear.linear_epochs.unwrap_or(cfg.linear_epochs);
    cfg.linear_batch_size = linear.linear_batch_size.unwrap_or(cfg.linear_batch_size);
    cfg.linear_lr = linear.linear_lr.unwrap_or(cfg.linear_lr);
    cfg.linear_frozen_bn |= linear.linear_frozen_bn;
    let data = open_train(&cfg)?;
    let num_classes = data.num_classes();
    let encoder = model::encoder(&cfg)?;
    let backbone = &encoder.backbone;
    let probe = LinearClassifier::new(backbone.feature_channels(), num_classes)?;
    out_dir::prepare(out, 4 * encoder.params.total_len() + (1 << 20))?;
    remove_stale_temporaries(&out.join(LINEAR_FILE))?;

    let mut params = TensorSet::zeros(backend, &encoder.params)?;
    let mut state = TensorSet::zeros(backend, &encoder.state)?;
    ckpt.get_set(backend, &encoder.params, &mut params, "")?;
    ckpt.get_set(backend, &encoder.state, &mut state, "")?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed ^ 0x5EED_0002);
    let mut classifier = Trainable::initialised(backend, &probe.params, &mut rng)?;

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
    let mut progress = Progress::new("linear", total, 0, Some(&out.join(LOG_FILE)))?;
    let mut global_step = 0u64;
    eprintln!(
        "stage 2: linear classifier on the frozen backbone, {} epochs of {} class-balanced batches of {b}",
        cfg.linear_epochs, steps_per_epoch
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
        }
        let mean = if count > 0 {
            sum / count as f64
        } else {
            f64::NAN
        };
        progress.record(json!({"kind": "epoch", "epoch": epoch + 1, "loss": mean}))?;
    }
    progress.finish();

    // The backbone under its names, its re-estimated statistics, and fc: the layout of a
    // torchvision classifier.
    let mut w = CheckpointWriter::new();
    for (i, spec) in encoder.params.specs().iter().enumerate() {
        if spec.name.starts_with("head.") {
            continue;
        }
        let mut host = vec![0.0f32; spec.len()];
        backend.download(&params.buffers()[i], 0, &mut host)?;
        w.put_f32(&spec.name, spec.dims(), &host)?;
    }
    w.put_set(backend, &encoder.state, &state, "")?;
    put_batch_counters(&mut w, &encoder.state, "", global_step as i64)?;
    w.put_set(backend, &probe.params, &classifier.params, "")?;
    w.put_meta("config", cfg.to_json());
    w.put_meta("stage", "linear");
    w.put_meta("num_classes", num_classes.to_string());
    w.put_meta(
        "class_counts",
        json!(class_counts(data.as_ref())).to_string(),
    );
    let path = out.join(LINEAR_FILE);
    w.write_atomic(&path)?;
    Ok(path)
}
