//! `runtime eval`: top-1 on a test set, overall and on Many / Medium / Few classes, and top-5,
//! from a classifier checkpoint (stage 2's `linear.safetensors` or the cross-entropy
//! baseline's `stage1.safetensors`). Batch norm runs in inference mode. Prints the table and
//! writes `OUT/metrics.json`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use dscl_core::backend::prelude::*;
use dscl_core::collective::Collective;
use dscl_core::nn::{Linear, ResNet, ResNetRecord, Scratch, TensorSet};

use crate::augment::eval_view;
use crate::config::{DataArgs, EvalArgs, RunConfig};
use crate::data::{open_test, workers, Dataset, Loader, LoaderConfig, Transform};
use crate::io::checkpoint::schema::{self, Stage};
use crate::io::checkpoint::Checkpoint;
use crate::io::log::phase;
use crate::io::out_dir::METRICS_FILE;
use crate::io::progress::Progress;
use crate::io::write_report;
use crate::metrics::{Metrics, Tally};
use crate::model;
use crate::train::augment_config;

const EVAL_BATCH: usize = 64;

/// `runtime eval`'s host-side input, read and checked before a device is opened: the
/// classifier checkpoint, the configuration it records with the data flags applied, its
/// classes, and the test set, indexed and checked.
pub struct EvalInput {
    checkpoint: Checkpoint,
    cfg: RunConfig,
    num_classes: usize,
    counts: Vec<usize>,
    test: Arc<dyn Dataset>,
}

impl EvalInput {
    /// Reads `checkpoint` and opens the test set named by `data` (or the one recorded in the
    /// checkpoint's config), unless the caller has opened it (`opened`: `run`, in its data
    /// phase).
    pub fn prepare(
        checkpoint: &Path,
        data: Option<&DataArgs>,
        opened: Option<Arc<dyn Dataset>>,
    ) -> Result<Self> {
        let ckpt = Checkpoint::read(checkpoint)?;
        let stage = schema::stage_name(&ckpt)?;
        if !matches!(
            Stage::named(stage),
            Some(Stage::Linear | Stage::CrossEntropy)
        ) {
            bail!(
                "{} is a `{stage}` checkpoint; evaluate the classifier: linear.safetensors after \
                 `runtime linear`, or stage1.safetensors of a `--loss ce` run",
                checkpoint.display()
            );
        }
        let mut cfg = schema::config(&ckpt)?;
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
        let (num_classes, counts) = schema::classes(&ckpt)?;
        let test = match opened {
            Some(set) => set,
            None => open_test(&cfg, num_classes)?,
        };
        Ok(EvalInput {
            checkpoint: ckpt,
            cfg,
            num_classes,
            counts,
            test,
        })
    }
}

/// Evaluates `input`'s classifier on its test set and writes `out/metrics.json`; across the
/// ranks `collective` connects, each evaluates its shard and rank 0 writes.
pub fn evaluate<B: Backend<Elem = f32>>(
    backend: &B,
    collective: &impl Collective<B>,
    input: EvalInput,
    eval: &EvalArgs,
    out: &Path,
) -> Result<Metrics> {
    let writes = collective.placement().rank == 0;
    let (cfg, num_classes) = (&input.cfg, input.num_classes);
    let net = model::classifier(cfg, num_classes)?;
    let mut params = TensorSet::zeros(backend, &net.params)?;
    let mut state = TensorSet::zeros(backend, &net.state)?;
    schema::load_classifier(&input.checkpoint, backend, &net, &mut params, &mut state)?;

    let mut pass = TestPass::new(backend, input.test, cfg, &net.backbone, num_classes, writes)?;
    let tally = pass.run(
        backend,
        collective,
        &net.backbone,
        &params,
        &state,
        &net.fc,
        &params,
    )?;
    let metrics = tally.finish(&input.counts, eval.split_thresholds)?;
    if writes {
        write_report(out, METRICS_FILE, &metrics)?;
    }
    Ok(metrics)
}

/// The test set of a run, ready to evaluate a backbone and classifier on (batch norm in
/// inference mode): `runtime eval`'s pass, and stage 2's after every epoch with
/// `--eval-every-epoch`.
pub struct TestPass<B: Backend> {
    test: Arc<dyn Dataset>,
    num_classes: usize,
    batch: usize,
    image_size: usize,
    workers: usize,
    skip_bad: bool,
    transform: Transform<Vec<f32>>,
    record: ResNetRecord<B>,
    scratch: Scratch<B>,
    logits: B::Buffer,
    host_logits: Vec<f32>,
    x: Vec<f32>,
    x_buf: B::Buffer,
    show_progress: bool,
}

impl<B: Backend<Elem = f32>> TestPass<B> {
    /// A pass over `test` (opened by the caller: `open_test`) for a model of `num_classes`
    /// classes on `backbone`; `show_progress` draws a progress bar per pass.
    pub fn new(
        backend: &B,
        test: Arc<dyn Dataset>,
        cfg: &RunConfig,
        backbone: &ResNet,
        num_classes: usize,
        show_progress: bool,
    ) -> Result<Self> {
        let s = cfg.image_size;
        let b = EVAL_BATCH.min(test.len());
        let record = backbone.plan(backend, b, s, s)?;
        let scratch = Scratch::new(backend, backbone.needs(backend, &record))?;
        let aug = augment_config(cfg);
        let transform: Transform<Vec<f32>> = Arc::new(move |img, _| Ok(eval_view(img, &aug)));
        Ok(TestPass {
            test,
            num_classes,
            batch: b,
            image_size: s,
            workers: workers(cfg),
            skip_bad: cfg.data.skip_bad,
            transform,
            record,
            scratch,
            logits: backend.alloc(b * num_classes)?,
            host_logits: vec![0.0; b * num_classes],
            x: vec![0.0; b * 3 * s * s],
            x_buf: backend.alloc(b * 3 * s * s)?,
            show_progress,
        })
    }

    /// Classifies every test image with `backbone` (parameters `backbone_params`, running
    /// statistics `state`) and `fc` (its tensors in `fc_params`, which may be the same set).
    ///
    /// Across the ranks `collective` connects, each rank evaluates every R-th test image from
    /// its rank on, and the counts are summed: every rank returns the whole test set's tally.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        backend: &B,
        collective: &impl Collective<B>,
        backbone: &ResNet,
        backbone_params: &TensorSet<B>,
        state: &TensorSet<B>,
        fc: &Linear,
        fc_params: &TensorSet<B>,
    ) -> Result<Tally> {
        let (b, k) = (self.batch, self.num_classes);
        let mut lc = LoaderConfig::new(b, self.workers);
        lc.skip_bad = self.skip_bad;
        let placement = collective.placement();
        let order: Vec<usize> = (placement.rank..self.test.len())
            .step_by(placement.world)
            .collect();
        let batches = order.len().div_ceil(b) as u64;
        let loader = Loader::new(self.test.clone(), order, self.transform.clone(), lc)?;
        let mut tally = Tally::new(k);
        let mut progress = self
            .show_progress
            .then(|| Progress::new(phase::EVAL, batches, 0, None))
            .transpose()?;
        let n = 3 * self.image_size * self.image_size;
        for batch in loader {
            let batch = batch?;
            // A short last batch is padded with zeros; in inference mode rows do not interact.
            self.x.fill(0.0);
            for (i, v) in batch.items.iter().enumerate() {
                self.x[i * n..(i + 1) * n].copy_from_slice(v);
            }
            backend.upload(&mut self.x_buf, 0, &self.x)?;
            backbone.forward_inference(
                backend,
                backbone_params,
                state,
                &mut self.record,
                &self.x_buf,
                &mut self.scratch,
            )?;
            fc.forward(backend, fc_params, b, &self.record.pooled, &mut self.logits)?;
            backend.download(&self.logits, 0, &mut self.host_logits)?;
            for (i, &label) in batch.labels.iter().enumerate() {
                tally.add(label, &self.host_logits[i * k..(i + 1) * k])?;
            }
            if let Some(p) = &mut progress {
                p.tick(batch.len() as u64)?;
            }
        }
        if let Some(p) = &progress {
            p.finish();
        }
        if placement.world > 1 {
            tally.sum_across(|counts| Ok(collective.all_reduce_sum_host(counts)?))?;
        }
        Ok(tally)
    }
}
