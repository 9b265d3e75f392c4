//! `runtime eval`: top-1 on a test set, overall and on Many / Medium / Few classes, from a
//! classifier checkpoint (stage 2's `linear.safetensors` or the cross-entropy baseline's
//! `stage1.safetensors`). Batch norm runs in inference mode. Prints the table and writes
//! `OUT/metrics.json`.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use dscl_core::nn::{Scratch, TensorSet};
use dscl_core::Backend;

use crate::augment::eval_view;
use crate::checkpoint::Checkpoint;
use crate::config::{EvalArgs, RunConfig};
use crate::data::{Loader, LoaderConfig, Transform};
use crate::datasets::{open_test, workers};
use crate::metrics::{Metrics, Tally};
use crate::model;
use crate::progress::Progress;
use crate::stage1::augment_config;

pub const METRICS_FILE: &str = "metrics.json";
const EVAL_BATCH: usize = 64;

/// Evaluates `checkpoint` on the test set named by `data` (or the one recorded in the
/// checkpoint's config) and writes `out/metrics.json`.
pub fn evaluate<B: Backend<Elem = f32>>(
    backend: &B,
    checkpoint: &Path,
    data: Option<&crate::config::DataArgs>,
    eval: &EvalArgs,
    out: &Path,
) -> Result<Metrics> {
    let ckpt = Checkpoint::read(checkpoint)?;
    let stage = ckpt.meta("stage")?;
    if stage != "linear" && stage != "ce" {
        bail!(
            "{} is a `{stage}` checkpoint; evaluate the classifier: linear.safetensors after \
             `runtime linear`, or stage1.safetensors of a `--loss ce` run",
            checkpoint.display()
        );
    }
    let mut cfg = RunConfig::from_json(ckpt.meta("config")?)
        .with_context(|| format!("{}: unreadable config record", checkpoint.display()))?;
    if let Some(d) = data {
        let given = d.test_list.is_some()
            || d.imagenet_lt_test_json.is_some()
            || d.test_image_folder.is_some();
        if given {
            cfg.data.test_list = d.test_list.clone();
            cfg.data.imagenet_lt_test_json = d.imagenet_lt_test_json.clone();
            cfg.data.test_image_folder = d.test_image_folder.clone();
            if d.root.is_some() {
                cfg.data.root = d.root.clone();
            }
        }
        cfg.data.skip_bad |= d.skip_bad;
        if d.workers.is_some() {
            cfg.data.workers = d.workers;
        }
    }
    let num_classes: usize = ckpt.meta("num_classes")?.parse().context("num_classes")?;
    let counts: Vec<usize> =
        serde_json::from_str(ckpt.meta("class_counts")?).context("class_counts")?;
    let net = model::classifier(&cfg, num_classes)?;
    let mut params = TensorSet::zeros(backend, &net.params)?;
    let mut state = TensorSet::zeros(backend, &net.state)?;
    ckpt.get_set(backend, &net.params, &mut params, "")?;
    ckpt.get_set(backend, &net.state, &mut state, "")?;

    let test = open_test(&cfg, num_classes)?;
    let s = cfg.image_size;
    let b = EVAL_BATCH.min(test.len());
    let mut record = net.backbone.plan(backend, b, s, s)?;
    let mut scratch = Scratch::new(backend, net.backbone.needs(backend, &record))?;
    let mut logits = backend.alloc(b * num_classes)?;
    let mut host_logits = vec![0.0f32; b * num_classes];
    let mut x = vec![0.0f32; b * 3 * s * s];
    let mut x_buf = backend.alloc(x.len())?;
    let aug = augment_config(&cfg);
    let transform: Transform<Vec<f32>> = Arc::new(move |img, _| Ok(eval_view(img, &aug)));
    let mut lc = LoaderConfig::new(b, workers(&cfg));
    lc.skip_bad = cfg.data.skip_bad;
    let loader = Loader::new(test.clone(), (0..test.len()).collect(), transform, lc)?;
    let mut tally = Tally::new(num_classes);
    let mut progress = Progress::new("eval", test.len().div_ceil(b) as u64, 0, None)?;
    for batch in loader {
        let batch = batch?;
        let n = 3 * s * s;
        // A short last batch is padded with zeros; in inference mode rows do not interact.
        x.fill(0.0);
        for (i, v) in batch.items.iter().enumerate() {
            x[i * n..(i + 1) * n].copy_from_slice(v);
        }
        backend.upload(&mut x_buf, 0, &x)?;
        net.backbone.forward_inference(
            backend,
            &params,
            &state,
            &mut record,
            &x_buf,
            &mut scratch,
        )?;
        net.fc
            .forward(backend, &params, b, &record.pooled, &mut logits)?;
        backend.download(&logits, 0, &mut host_logits)?;
        for (i, &label) in batch.labels.iter().enumerate() {
            let row = &host_logits[i * num_classes..(i + 1) * num_classes];
            let predicted = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (c, &v)| {
                    if v > best.1 {
                        (c, v)
                    } else {
                        best
                    }
                })
                .0;
            tally.add(label, predicted as u32)?;
        }
        progress.step(batch.len() as u64, serde_json::json!({}))?;
    }
    progress.finish();
    let metrics = tally.finish(&counts, eval.split_thresholds)?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(METRICS_FILE);
    let tmp = out.join(format!(".{METRICS_FILE}.tmp-{}", std::process::id()));
    fs::write(&tmp, serde_json::to_string_pretty(&metrics)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(metrics)
}
