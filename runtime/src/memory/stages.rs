//! The estimates of each stage, part by part, from the configuration and the core's layer
//! shapes alone.

use anyhow::Result;
use dscl_core::loss::DEFAULT_MAX_BLOCK_ELEMS;
use dscl_core::nn::resnet::ActivationSizes;
use dscl_core::nn::{LinearClassifier, ResNet, TensorLayout};

use super::{MemoryEstimate, MemoryPart, Place};
use crate::config::{CropNorm, LossKind, RunConfig};
use crate::data;
use crate::model;

/// Bytes of one element of every buffer counted.
const ELEM: u64 = 4;

/// A count that stays `None` once any step overflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct N(Option<u64>);

fn n(v: usize) -> N {
    N(u64::try_from(v).ok())
}

impl std::ops::Add for N {
    type Output = N;
    fn add(self, o: N) -> N {
        N(self.0.zip(o.0).and_then(|(a, b)| a.checked_add(b)))
    }
}

impl std::ops::Mul for N {
    type Output = N;
    fn mul(self, o: N) -> N {
        N(self.0.zip(o.0).and_then(|(a, b)| a.checked_mul(b)))
    }
}

impl N {
    fn max(self, o: N) -> N {
        N(self.0.zip(o.0).map(|(a, b)| a.max(b)))
    }
    fn min(self, o: N) -> N {
        N(self.0.zip(o.0).map(|(a, b)| a.min(b)))
    }
    /// For comparisons: an overflowed count above every other.
    fn order(self) -> u128 {
        self.0.map_or(u128::MAX, u128::from)
    }
    fn bytes(self) -> Option<u64> {
        self.0?.checked_mul(ELEM)
    }
}

fn part(what: &'static str, elements: N, flag: &'static str, place: Place) -> MemoryPart {
    MemoryPart {
        what,
        bytes: elements.bytes(),
        flag,
        place,
    }
}

/// Per-image activation sizes as counts (`None` when the network cannot count them).
struct Act {
    kept: N,
    largest: N,
    columns: N,
}

fn activations(net: &ResNet, side: usize) -> Act {
    match net.activation_sizes(side, side) {
        Some(ActivationSizes {
            kept,
            largest,
            largest_columns,
        }) => Act {
            kept: n(kept),
            largest: n(largest),
            columns: n(largest_columns),
        },
        None => Act {
            kept: N(None),
            largest: N(None),
            columns: N(None),
        },
    }
}

/// The CPU threads the convolutions split a batch over.
fn threads() -> N {
    n(std::thread::available_parallelism().map_or(1, |t| t.get()))
}

/// The largest tensor of `layout` (a convolution's weight gradient is accumulated per thread).
fn largest_tensor(layout: &TensorLayout) -> N {
    n(layout.specs().iter().map(|s| s.len()).max().unwrap_or(0))
}

/// Elements of the scratch one step's passes share: five buffers of the largest activation
/// of the largest pass, and a convolution workspace of one image's column matrix and weight
/// gradient per thread.
fn scratch(passes: &[(N, &Act)], params: &TensorLayout) -> N {
    let mut largest = n(0);
    let mut workspace = n(0);
    for &(batch, act) in passes {
        largest = largest.max(batch * act.largest);
        workspace = workspace.max(threads().min(batch) * (act.columns + largest_tensor(params)));
    }
    n(5) * largest + workspace
}

/// Anchor rows a loss holds logits for at once (the core's blocking of the B x N logits).
fn block_rows(rows: N, cols: N) -> N {
    let cap = n(DEFAULT_MAX_BLOCK_ELEMS);
    N(rows
        .0
        .zip(cols.0)
        .zip(cap.0)
        .map(|((r, c), cap)| (cap / c.max(1)).clamp(1, r.max(1))))
}

/// The peak of `runtime train` (stage 1): the contrastive step of DSCL or SupCon with PBSD,
/// or the cross-entropy baseline's classifier step (`--loss ce`), over `num_classes` classes.
pub fn estimate(cfg: &RunConfig, num_classes: usize) -> Result<MemoryEstimate> {
    match cfg.loss {
        LossKind::Ce => estimate_cross_entropy(cfg, num_classes),
        LossKind::Dscl | LossKind::Scl => estimate_contrastive(cfg),
    }
}

const BATCH_OR_SIZE: &str = "--batch-size or --image-size";
const CROPS: &str = "--crops or --crop-size";
const LINEAR_BATCH_OR_SIZE: &str = "--linear-batch-size or --image-size";

fn estimate_contrastive(cfg: &RunConfig) -> Result<MemoryEstimate> {
    use Place::{Device, Host};
    let encoder = model::encoder(cfg)?;
    let net = &encoder.backbone;
    let (params, state) = (n(encoder.params.total_len()), n(encoder.state.total_len()));
    let (c, d) = (n(net.feature_channels()), n(cfg.embedding_dim));
    let (big_b, r, k) = (n(cfg.batch_size), n(cfg.replicas), n(cfg.queue));
    let b = n(cfg.batch_size / cfg.replicas.max(1));
    let pbsd = cfg.pbsd_weight > 0.0;
    let crops = n(if pbsd { cfg.crops } else { 0 });
    let crop_rows = crops * big_b;
    let (s, cs) = (n(cfg.image_size), n(cfg.crop_size));
    let full = activations(net, cfg.image_size);
    let small = activations(net, cfg.crop_size);
    // An encoder pass keeps, per image, the backbone's activations and the head's hidden
    // layer four times (output, ReLU, their gradients), its output, the embedding, its
    // gradient, the pooled features' gradient and a norm; batch norm keeps two statistics per
    // channel and group (the state's count, which is two per channel).
    let per_image = |act: &Act| act.kept + n(5) * c + n(3) * d + n(1);
    let multi = cfg.replicas > 1;
    let group_rows = if multi {
        // Each group's gathered rows, and the keys restored to image order.
        n(4) * big_b * d + big_b + n(3) * crop_rows * d + big_b * d
    } else {
        n(0)
    };
    let query_key = n(2) * (big_b * per_image(&full) + state * r) + big_b * d + group_rows;
    let crop_groups = match cfg.crop_norm {
        CropNorm::PerSet => crops * r,
        CropNorm::Joint => n(1),
    };
    let crop_pass = if pbsd {
        // The students' pass, and per crop the teacher: 2x2 ROI features (4c), pooled (c),
        // through the head (4c + d), normalised (1 + d), and the students' gradient (d).
        crop_rows * per_image(&small)
            + state * crop_groups
            + crop_rows * (n(4) * c + c + n(4) * c + d + n(1) + d + d)
    } else {
        n(0)
    };
    let dscl_cols = n(2) * b + k;
    let dscl = block_rows(b, dscl_cols) * dscl_cols + dscl_cols + b;
    let pbsd_cols = n(1) + k;
    let pbsd_loss = if pbsd {
        let rows = block_rows(b, pbsd_cols);
        n(2) * rows * pbsd_cols + rows + crops * b
    } else {
        n(0)
    };
    let losses = r * (dscl + pbsd_loss);
    let mut passes = vec![(big_b, &full)];
    if pbsd {
        passes.push((crop_rows, &small));
    }
    let scratch_flag =
        if pbsd && (crop_rows * small.largest).order() > (big_b * full.largest).order() {
            CROPS
        } else {
            BATCH_OR_SIZE
        };
    // One batch: query, key, crops with their boxes, a label.
    let item = n(6) * s * s + crops * (n(3) * cs * cs + n(5)) + n(1);
    let workers = n(data::workers(cfg));
    let parts = vec![
        part(
            "model: weights, gradients, momentum, key encoder, batch-norm statistics",
            n(4) * params + n(2) * state,
            "--arch",
            Device,
        ),
        part(
            "model copies while a checkpoint is written",
            n(2) * (n(3) * params + n(2) * state),
            "--arch",
            Host,
        ),
        part(
            "key queue (keys and labels)",
            k * (d + n(1)),
            "--queue",
            Device,
        ),
        part(
            "key queue copies while a checkpoint is written",
            n(3) * k * (d + n(1)),
            "--queue",
            Host,
        ),
        part(
            "contrastive losses' logits over the queue",
            losses,
            "--queue",
            Device,
        ),
        part(
            "activations of the query and key passes",
            query_key,
            BATCH_OR_SIZE,
            Device,
        ),
        part(
            "activations of the PBSD crop pass",
            crop_pass,
            CROPS,
            Device,
        ),
        part(
            "scratch and convolution workspace of the largest pass",
            scratch(&passes, &encoder.params),
            scratch_flag,
            Device,
        ),
        part(
            "input batch on the device",
            big_b * item,
            BATCH_OR_SIZE,
            Device,
        ),
        part(
            "input batches on the host (assembled, prefetched, decoding)",
            (n(4) * big_b + n(2) * workers) * item,
            BATCH_OR_SIZE,
            Host,
        ),
    ];
    Ok(MemoryEstimate::new("stage 1", parts))
}

fn estimate_cross_entropy(cfg: &RunConfig, num_classes: usize) -> Result<MemoryEstimate> {
    use Place::{Device, Host};
    let net = model::classifier(cfg, num_classes)?;
    let backbone = model::backbone(cfg)?;
    let (params, state) = (n(net.params.total_len()), n(net.state.total_len()));
    let classes = n(num_classes);
    let fc = n(net.backbone.feature_channels()) * classes + classes;
    let act = activations(&net.backbone, cfg.image_size);
    let b = n(cfg.batch_size);
    let pass = classifier_pass(b, &act, state, &net.backbone, num_classes);
    let item = n(3) * n(cfg.image_size) * n(cfg.image_size) + n(1);
    let workers = n(data::workers(cfg));
    let parts = vec![
        part(
            "backbone: weights, gradients, momentum, batch-norm statistics",
            n(3) * n(backbone.params.total_len()) + state,
            "--arch",
            Device,
        ),
        part(
            "classifier (classes x features): weights, gradients, momentum",
            n(3) * fc,
            "--arch",
            Device,
        ),
        part(
            "model copies while a checkpoint is written",
            n(2) * (n(2) * params + state),
            "--arch",
            Host,
        ),
        part(
            "activations of the training pass",
            pass,
            BATCH_OR_SIZE,
            Device,
        ),
        part(
            "scratch and convolution workspace of the pass",
            scratch(&[(b, &act)], &net.params),
            BATCH_OR_SIZE,
            Device,
        ),
        part("input batch on the device", b * item, BATCH_OR_SIZE, Device),
        part(
            "input batches on the host (assembled, prefetched, decoding)",
            (n(4) * b + n(2) * workers) * item,
            BATCH_OR_SIZE,
            Host,
        ),
    ];
    Ok(MemoryEstimate::new("stage 1", parts))
}

/// A classifier step's record over `batch` images: the backbone's activations and batch-norm
/// statistics, the logits, the pooled features' gradient and the per-row loss.
fn classifier_pass(batch: N, act: &Act, state: N, net: &ResNet, classes: usize) -> N {
    batch * (act.kept + n(classes) + n(net.feature_channels()) + n(1)) + state
}

/// The peak of `runtime linear` (stage 2): the linear classifier over `num_classes` classes
/// on the frozen backbone, in batches of `--linear-batch-size`, or of the whole training set
/// of `train_images` where that is smaller (as stage 2 makes them).
pub fn estimate_linear(
    cfg: &RunConfig,
    num_classes: usize,
    train_images: usize,
) -> Result<MemoryEstimate> {
    use Place::{Device, Host};
    let backbone = model::backbone(cfg)?;
    let net = &backbone.net;
    let probe = LinearClassifier::new(net.feature_channels(), num_classes)?;
    let (params, state) = (
        n(backbone.params.total_len()),
        n(backbone.state.total_len()),
    );
    let fc = n(probe.params.total_len());
    // The stage-1 checkpoint stays read in memory: a contrastive one holds the encoder, its
    // velocity, the key encoder and the queue; a cross-entropy one the classifier and its
    // velocity.
    let stage1 = match cfg.loss {
        LossKind::Ce => {
            let ce = model::classifier(cfg, num_classes)?;
            n(2) * n(ce.params.total_len()) + n(ce.state.total_len())
        }
        LossKind::Dscl | LossKind::Scl => {
            let encoder = model::encoder(cfg)?;
            n(3) * n(encoder.params.total_len())
                + n(2) * n(encoder.state.total_len())
                + n(cfg.queue) * (n(cfg.embedding_dim) + n(1))
        }
    };
    let act = activations(net, cfg.image_size);
    let b = n(cfg.linear_batch_size.min(train_images));
    let item = n(3) * n(cfg.image_size) * n(cfg.image_size) + n(1);
    let workers = n(data::workers(cfg));
    let parts = vec![
        part(
            "frozen backbone: weights and batch-norm statistics",
            params + state,
            "--arch",
            Device,
        ),
        part(
            "classifier (classes x features): weights, gradients, momentum",
            n(3) * fc,
            "--arch",
            Device,
        ),
        part(
            "the stage-1 checkpoint, read",
            stage1,
            "--arch or --queue of stage 1",
            Host,
        ),
        part(
            "model copies while the checkpoint is written",
            n(2) * (params + state + fc),
            "--arch",
            Host,
        ),
        part(
            "activations of the backbone pass",
            classifier_pass(b, &act, state, net, num_classes),
            LINEAR_BATCH_OR_SIZE,
            Device,
        ),
        part(
            "scratch and convolution workspace of the pass",
            scratch(&[(b, &act)], &backbone.params),
            LINEAR_BATCH_OR_SIZE,
            Device,
        ),
        part(
            "input batch on the device",
            b * item,
            LINEAR_BATCH_OR_SIZE,
            Device,
        ),
        part(
            "input batches on the host (assembled, prefetched, decoding)",
            (n(4) * b + n(2) * workers) * item,
            LINEAR_BATCH_OR_SIZE,
            Host,
        ),
    ];
    Ok(MemoryEstimate::new("stage 2", parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Arch, DataArgs, LinearArgs, TrainArgs};
    use crate::memory::{check_fits, show_bytes};

    const GIB: u64 = 1 << 30;

    /// The ImageNet-LT recipe (a list file's defaults) with `train` and `image_size` over it.
    fn recipe(train: TrainArgs, image_size: Option<usize>) -> RunConfig {
        let data = DataArgs {
            train_list: Some("train.txt".into()),
            image_size,
            ..DataArgs::default()
        };
        RunConfig::resolve(&data, &train, &LinearArgs::default(), 0).unwrap()
    }

    /// The refusal's first listed part (the largest) and the whole message.
    fn refusal(est: &MemoryEstimate, available: Option<u64>) -> (String, String) {
        let err = check_fits(est, available).unwrap_err().to_string();
        let first = err.lines().nth(1).unwrap_or_default().to_string();
        (first, err)
    }

    #[test]
    fn the_imagenet_lt_recipe_fits_128_gib_but_not_1_gib() {
        let cfg = recipe(TrainArgs::default(), None);
        assert_eq!(
            (cfg.arch, cfg.image_size, cfg.batch_size, cfg.queue),
            (Arch::Resnet50, 224, 256, 65536)
        );
        let est = estimate(&cfg, 1000).unwrap();
        let total = est.total().unwrap();
        assert!((32 * GIB..128 * GIB).contains(&total), "{est}");
        check_fits(&est, Some(128 * GIB)).unwrap();
        check_fits(&est, None).unwrap();
        let (first, err) = refusal(&est, Some(GIB));
        assert!(err.contains("only 1.0 GiB is available"), "{err}");
        assert!(err.contains(&show_bytes(Some(total))), "{err}");
        // 256 queries and 256 keys of 224 px through ResNet-50 keep most of it.
        assert!(first.contains("query and key passes"), "{err}");
        assert!(first.contains("--batch-size"), "{err}");
    }

    #[test]
    fn a_queue_of_2_to_the_31_is_refused_naming_the_queue() {
        let cfg = recipe(
            TrainArgs {
                queue: Some(1 << 31),
                ..TrainArgs::default()
            },
            None,
        );
        let (first, err) = refusal(&estimate(&cfg, 1000).unwrap(), Some(128 * GIB));
        assert!(first.contains("--queue"), "{err}");
        assert!(!first.contains("--batch-size"), "{err}");
    }

    #[test]
    fn a_batch_of_a_million_at_224_px_is_refused_naming_the_batch_size() {
        let cfg = recipe(
            TrainArgs {
                batch_size: Some(1_000_000),
                // A queue must hold a replica group's keys (500,000).
                queue: Some(1 << 20),
                ..TrainArgs::default()
            },
            None,
        );
        let (first, err) = refusal(&estimate(&cfg, 1000).unwrap(), Some(128 * GIB));
        assert!(first.contains("--batch-size"), "{err}");
        assert!(err.contains("TiB"), "{err}");
    }

    #[test]
    fn resnet50_at_8192_px_is_refused_naming_the_image_size() {
        let cfg = recipe(TrainArgs::default(), Some(8192));
        assert_eq!(cfg.arch, Arch::Resnet50);
        let (first, err) = refusal(&estimate(&cfg, 1000).unwrap(), Some(128 * GIB));
        assert!(first.contains("--image-size"), "{err}");
    }

    #[test]
    fn a_count_beyond_64_bits_is_refused_even_with_the_memory_unknown() {
        let cfg = recipe(
            TrainArgs {
                queue: Some(usize::MAX / 2),
                ..TrainArgs::default()
            },
            None,
        );
        let est = estimate(&cfg, 1000).unwrap();
        assert_eq!(est.total(), None);
        let (first, err) = refusal(&est, None);
        assert!(
            first.contains("more than 16 EiB") && first.contains("--queue"),
            "{err}"
        );
    }

    #[test]
    fn the_cross_entropy_and_linear_stages_count_their_classifier() {
        let ce = recipe(
            TrainArgs {
                loss: LossKind::Ce,
                ..TrainArgs::default()
            },
            None,
        );
        for est in [
            estimate(&ce, 1000).unwrap(),
            estimate_linear(&ce, 1000, usize::MAX).unwrap(),
        ] {
            let fc = est
                .parts()
                .iter()
                .find(|p| p.what.starts_with("classifier"))
                .unwrap_or_else(|| panic!("{est}"));
            // 2048 x 1000 weights and 1000 biases, with gradients and momentum.
            assert_eq!(fc.bytes, Some(3 * 4 * (2048 * 1000 + 1000)), "{est}");
        }
        // Stage 2 plans the backbone's pass over the linear batch (2048 images at 224 px).
        let (first, err) = refusal(&estimate_linear(&ce, 1000, usize::MAX).unwrap(), Some(GIB));
        assert!(first.contains("--linear-batch-size"), "{err}");
    }

    #[test]
    fn the_host_share_of_an_estimate_leaves_the_device_buffers_out() {
        let est = estimate(&recipe(TrainArgs::default(), None), 1000).unwrap();
        let host = est.only(Place::Host);
        assert!(host.parts().iter().all(|p| p.place == Place::Host));
        assert!(host.total().unwrap() < est.total().unwrap() / 4, "{host}");
        assert_eq!(
            host.total().unwrap() + est.only(Place::Device).total().unwrap(),
            est.total().unwrap()
        );
    }
}
