//! `runtime linear`'s work, stage 2: a new linear classifier on the frozen stage-1 backbone,
//! trained with cross-entropy on class-balanced batches (pick a class uniformly, then an
//! image). As in the official code (`equal_lincls.py`) the classifier starts from weights
//! drawn from N(0, 0.01) and a zero bias, and the backbone's batch norm stays in training mode,
//! so its running statistics are re-estimated on these images (stage 1 last set them on the
//! small crops); the backbone's weights do not change.
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
//!
//! Like stage 1, stage 2 runs in the run's `--replicas` groups (the official `equal_lincls.py`
//! runs under DDP too: the backbone's training-mode batch norm takes statistics per replica),
//! on one process or one group per rank of a `--distributed` run (rank 0 writes; the test set
//! is evaluated in shards, the counts summed).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use dscl_core::backend::prelude::*;
use dscl_core::collective::Collective;
use dscl_core::nn::{LinearClassifier, TensorSet};
use dscl_core::train::{ClassifierStep, LrSchedule, SgdConfig, Stage2Recipe, Trainable};
use rand::rngs::Xoshiro256PlusPlus;
use rand::SeedableRng;

use super::epochs::{self, Plan, Resumption, Sampling, SlotsNeeded, Stage, STAGE2_SEED};
use super::group_input::GroupInput;
use super::report::ClassifierReport;
use super::{augment_config, Position};
use crate::augment::stage2_view;
use crate::backend_choice::BackendChoice;
use crate::cluster::{Cluster, Exchange, TrainBackend};
use crate::config::{EvalArgs, LinearArgs, RunConfig};
use crate::data::{class_counts, open_test, open_train, Batch, Dataset, Transform};
use crate::evaluate::TestPass;
use crate::io::checkpoint::schema::{self, LinearModel, Run, Stage as Written};
use crate::io::checkpoint::{remove_stale_temporaries, Checkpoint};
use crate::io::log::phase;
use crate::io::out_dir::{self, EPOCHS_FILE, LINEAR_FILE, METRICS_FILE};
use crate::io::progress::Progress;
use crate::io::write_report;
use crate::memory;
use crate::metrics::{Metrics, SplitThresholds, Stage2Epochs};
use crate::model::{self, Backbone};

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
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ STAGE2_SEED);
    Ok(Trainable::initialised(backend, &probe.params, &mut rng)?)
}

/// The rate of `linear_epochs` epochs from `linear_lr`: x gamma at the published recipe's
/// milestones as fractions of its epochs (20 and 30 of 40: a half and three quarters).
fn schedule(cfg: &RunConfig) -> Result<LrSchedule> {
    let published = Stage2Recipe::default();
    let e = cfg.linear_epochs as f64;
    let milestones = published
        .milestones
        .map(|m| e * m as f64 / published.epochs as f64);
    Ok(LrSchedule::step(
        cfg.linear_lr,
        &milestones,
        published.gamma,
    )?)
}

/// Stage 2's host-side input, read and checked before a device is opened: the stage-1
/// checkpoint, the configuration it records with the stage-2 flags applied, and the training
/// set it names, indexed and checked, with the memory stage 2 needs checked against it.
pub struct Stage2Input {
    checkpoint: Checkpoint,
    backbone_stage: Written,
    cfg: RunConfig,
    data: Arc<dyn Dataset>,
    /// With `--eval-every-epoch`: the test set each epoch is evaluated on.
    test: Option<Arc<dyn Dataset>>,
}

impl Stage2Input {
    /// Reads `checkpoint` (the stage-1 checkpoint of a contrastive run, or of a `--loss ce`
    /// run for cRT) and applies `linear` to its configuration.
    ///
    /// `checked`: the training set of the checkpoint's configuration when the caller has
    /// already opened it and checked stage 2's memory against it (`run`, before stage 1), so
    /// neither is done again; `None` opens and checks them here (`linear`). `test`: the test
    /// set the caller has opened, which `--eval-every-epoch` then evaluates on (with that flag
    /// and `None`, it is opened here; without the flag it is not used).
    pub fn prepare(
        choice: BackendChoice,
        checked: Option<Arc<dyn Dataset>>,
        test: Option<Arc<dyn Dataset>>,
        checkpoint: &Path,
        linear: &LinearArgs,
    ) -> Result<Self> {
        let ckpt = Checkpoint::read(checkpoint)?;
        let stage = schema::stage_name(&ckpt)?.to_string();
        let backbone_stage = match Written::named(&stage) {
            Some(s @ (Written::Contrastive | Written::CrossEntropy)) => s,
            _ => bail!(
                "{} is a `{stage}` checkpoint; `runtime linear` needs a stage-1 checkpoint \
                 (stage1.safetensors of a contrastive run, or of a --loss ce run for classifier \
                 re-training)",
                checkpoint.display()
            ),
        };
        let mut cfg = schema::config(&ckpt)?;
        cfg.linear_epochs = linear.linear_epochs.unwrap_or(cfg.linear_epochs);
        cfg.linear_batch_size = linear.linear_batch_size.unwrap_or(cfg.linear_batch_size);
        cfg.linear_lr = linear.linear_lr.unwrap_or(cfg.linear_lr);
        cfg.linear_frozen_bn |= linear.linear_frozen_bn;
        cfg.check_linear()?;
        let data = match checked {
            Some(data) => data,
            None => {
                let data = open_train(&cfg)?;
                memory::check_on(
                    &memory::estimate_linear(&cfg, data.num_classes(), data.len())?,
                    choice,
                )?;
                data
            }
        };
        // Opened here, before any device, so a run without test data stops before it trains.
        let test = match (linear.eval_every_epoch, test) {
            (false, _) => None,
            (true, Some(set)) => Some(set),
            (true, None) => Some(open_test(&cfg, data.num_classes())?),
        };
        Ok(Stage2Input {
            checkpoint: ckpt,
            backbone_stage,
            cfg,
            data,
            test,
        })
    }
}

impl Stage2Input {
    /// The run's configuration, with the stage-2 flags applied.
    pub fn config(&self) -> &RunConfig {
        &self.cfg
    }
}

/// Trains the classifier on the backbone of `input`'s checkpoint into `out` (rank 0 of a
/// `--distributed` run writes it; `cluster` is this process's part).
pub fn train<B: TrainBackend>(
    backend: &B,
    cluster: &Cluster,
    input: Stage2Input,
    eval: &EvalArgs,
    out: &Path,
) -> Result<Stage2> {
    let Stage2Input {
        checkpoint: ckpt,
        backbone_stage,
        cfg,
        data,
        test,
    } = input;
    let num_classes = data.num_classes();
    let counts = class_counts(data.as_ref());
    let net = model::backbone(&cfg)?;
    let probe = LinearClassifier::new(net.net.feature_channels(), num_classes)?;
    let writes = cluster.writes();
    if writes {
        out_dir::prepare(
            out,
            4 * (net.params.total_len() + probe.params.total_len()) + (1 << 20),
        )?;
        remove_stale_temporaries(&out.join(LINEAR_FILE))?;
    }

    let mut params = TensorSet::zeros(backend, &net.params)?;
    let mut state = TensorSet::zeros(backend, &net.state)?;
    schema::load_backbone(&ckpt, backend, &net, &mut params, &mut state)?;
    let mut classifier = fresh_classifier(backend, &probe, cfg.seed)?;
    let exchange = cluster.exchange_on(backend)?;
    // Every rank starts from rank 0's classifier (the seed gives every rank the same one).
    exchange.broadcast(backend, classifier.params.buffers_mut(), 0)?;
    // With --eval-every-epoch: the test pass, planned once for every epoch.
    let test = match test {
        Some(set) => Some(TestPass::new(
            backend,
            set,
            &cfg,
            &net.net,
            num_classes,
            false,
        )?),
        None => None,
    };

    // Whole replica groups: the batch rounded down to a multiple of the replica count.
    let replicas = cfg.replicas;
    let b = cfg.linear_batch_size.min(data.len()) / replicas * replicas;
    if b == 0 {
        bail!(
            "stage 2 takes batches of whole replica groups: {} training images are fewer than \
             the {replicas} replicas",
            data.len()
        );
    }
    let s = cfg.image_size;
    let steps_per_epoch = data.len().div_ceil(b);
    let placement = cluster.placement();
    if placement.world > 1 && placement.world != replicas {
        bail!(
            "the checkpoint's run has {replicas} replica group(s); run its stage 2 on as many \
             processes ({} here)",
            placement.world
        );
    }
    let mut step = match placement.world {
        1 => ClassifierStep::replicated(backend, &net.net, &probe.fc, b, s, replicas)?,
        _ => ClassifierStep::placed(backend, &net.net, &probe.fc, b, s, placement)?,
    };
    step.use_running_statistics(cfg.linear_frozen_bn);
    let local = step.local_batch();
    let plan = Plan {
        phase: phase::LINEAR,
        cfg: &cfg,
        data: &data,
        cluster,
        batch: b,
        epochs: cfg.linear_epochs,
        // One epoch draws as many class-balanced samples as the set has images.
        steps_per_epoch,
        schedule: schedule(&cfg)?,
        sampling: Sampling::ClassBalanced,
        resumption: Resumption::StartsOver,
        out,
    };
    let input = GroupInput::new(backend, placement, local, s)?;
    let mut linear_stage = Linear {
        backend,
        exchange: &exchange,
        cfg: &cfg,
        out,
        thresholds: eval.split_thresholds,
        counts: &counts,
        input,
        net: &net,
        params,
        state,
        probe: &probe,
        classifier,
        step,
        test,
        epochs: Stage2Epochs::new(),
        final_metrics: None,
    };
    if backbone_stage == Written::CrossEntropy && writes {
        eprintln!("stage 2 on the backbone of a cross-entropy run: classifier re-training (cRT)");
    }
    if writes {
        eprintln!(
        "stage 2: linear classifier on the frozen backbone, {} epochs of {} class-balanced batches of {b}{}",
        cfg.linear_epochs,
        steps_per_epoch,
        if linear_stage.test.is_some() {
            ", each evaluated on the test set"
        } else {
            ""
        }
        );
    }
    let end = epochs::run(&mut linear_stage, &plan, Position::default())?;
    cluster.check_same_model(backend, &linear_stage.classifier.params, end.global_step)?;

    let path = out.join(LINEAR_FILE);
    let model = LinearModel {
        backbone: &net,
        params: &linear_stage.params,
        state: &linear_stage.state,
        probe: &probe,
        fc: &linear_stage.classifier.params,
        steps: end.global_step,
        backbone_stage: backbone_stage.name(),
    };
    let run = Run {
        cfg: &cfg,
        class_counts: &counts,
    };
    if writes {
        schema::save_linear(&path, backend, run, model)?;
    }
    Ok(Stage2 {
        checkpoint: path,
        epochs: linear_stage.test.map(|_| linear_stage.epochs),
        final_metrics: linear_stage.final_metrics,
    })
}

/// The stage-2 stage: the frozen backbone, the classifier and its step, the batch's host and
/// device buffers, and with `--eval-every-epoch` the test pass and its record.
struct Linear<'a, B: Backend> {
    backend: &'a B,
    exchange: &'a Exchange<'a>,
    cfg: &'a RunConfig,
    out: &'a Path,
    thresholds: SplitThresholds,
    counts: &'a [usize],
    net: &'a Backbone,
    params: TensorSet<B>,
    state: TensorSet<B>,
    probe: &'a LinearClassifier,
    classifier: Trainable<B>,
    step: ClassifierStep<B>,
    /// This process's images and labels of each batch.
    input: GroupInput<B>,
    test: Option<TestPass<B>>,
    epochs: Stage2Epochs,
    final_metrics: Option<Metrics>,
}

impl<B: TrainBackend> Stage for Linear<'_, B> {
    type Item = Vec<f32>;
    type Report = ClassifierReport;

    fn transform(&self) -> Transform<Vec<f32>> {
        let aug = augment_config(self.cfg);
        Arc::new(move |img, rng| Ok(stage2_view(img, &aug, rng)))
    }

    fn needs(&self) -> Option<SlotsNeeded> {
        self.input.needs()
    }

    fn step(
        &mut self,
        batch: &Batch<Option<Vec<f32>>>,
        lr: f64,
        _at: Position,
    ) -> Result<Self::Report> {
        self.input.upload(self.backend, batch)?;
        let loss = self.step.linear_probe_step_across(
            self.backend,
            self.exchange,
            &self.net.net,
            &self.params,
            &mut self.state,
            &self.probe.fc,
            &mut self.classifier,
            &self.input.images_buf,
            &self.input.labels_buf,
            &SgdConfig::STAGE2,
            lr,
        )?;
        Ok(ClassifierReport { loss })
    }

    /// Stage 2 is short and keeps no checkpoint of its own.
    fn save(&mut self, _at: Position) -> Result<()> {
        Ok(())
    }

    fn saved(&self, _at: Position) -> String {
        "stage 2 is not saved part-way and starts over".into()
    }

    fn epoch_done(
        &mut self,
        plan: &Plan<'_>,
        epochs_done: usize,
        mean: f64,
        progress: &Progress,
    ) -> Result<()> {
        let Some(pass) = &mut self.test else {
            return Ok(());
        };
        let tally = pass.run(
            self.backend,
            self.exchange,
            &self.net.net,
            &self.params,
            &self.state,
            &self.probe.fc,
            &self.classifier.params,
        )?;
        let m = tally.finish(self.counts, self.thresholds)?;
        progress.println(&format!(
            "stage 2 epoch {epochs_done}/{}: loss {mean:.4}, test top-1 {:.2} top-5 {:.2}",
            plan.epochs, m.top1, m.top5
        ));
        self.epochs.push(epochs_done, mean, &m);
        let writes = Collective::<B>::placement(self.exchange).rank == 0;
        if writes {
            write_report(self.out, EPOCHS_FILE, &self.epochs)?;
        }
        if epochs_done == plan.epochs {
            // The final model's metrics, the same as `runtime eval` of the checkpoint.
            if writes {
                write_report(self.out, METRICS_FILE, &m)?;
            }
            self.final_metrics = Some(m);
        }
        Ok(())
    }
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
