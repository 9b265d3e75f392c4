//! The memory a run will need, counted from its configuration before anything is allocated,
//! so a run that cannot fit is refused at once with the settings that make it big, instead of
//! being killed by the kernel (or failing an allocation) minutes into its first epoch.
//!
//! Every buffer is counted at 4 bytes an element (the f32 backends; the f64 reference oracle
//! needs twice the [`Place::Device`] parts), in u64 with checked arithmetic: a count that
//! overflows is a part of unknown size, which no memory holds. The counts follow what the
//! core plans (records, losses, scratch) and what the runtime holds around it (input staging,
//! the loader's prefetch, checkpoint copies), plus a slack for the allocator and the process
//! itself. Not counted: a data set held in memory (CIFAR's arrays, the digits) and stage 2's
//! test pass under `--eval-every-epoch`.

use std::fmt;

use anyhow::{bail, Result};

use crate::backend_choice::BackendChoice;
use crate::config::{LossKind, RunConfig};
use crate::datasets;
use crate::model;
use dscl_core::loss::DEFAULT_MAX_BLOCK_ELEMS;
use dscl_core::nn::resnet::ActivationSizes;
use dscl_core::nn::{LinearClassifier, ResNet, TensorLayout};

/// Bytes of one element of every buffer counted.
const ELEM: u64 = 4;

/// Where a part lives: with the cpu backend both are host memory; with a GPU backend the
/// device parts are on the GPU and only the host parts in the machine's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Device,
    Host,
}

/// One share of the estimate: what it is, its bytes (`None`: more than a u64 counts) and the
/// flag that changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPart {
    pub what: &'static str,
    pub bytes: Option<u64>,
    pub flag: &'static str,
    pub place: Place,
}

/// The memory one stage of a run needs at its peak.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// `"stage 1"` or `"stage 2"`, for the messages.
    pub stage: &'static str,
    parts: Vec<MemoryPart>,
    slack: Option<u64>,
}

/// What the process holds beyond the buffers counted: peak resident sets measured with the
/// cpu backend ran 3 to 6 % above them for ResNet-18 at 64 px (stage 1: 906 MiB for 854
/// counted, 1421 for 1377 at batch 128 with a 65536-key queue; stage 2: 506 for 478), and 7
/// to 8 MiB above for the digits' tiny network (34 for 25, 17 for 9): vectors grown by
/// doubling while checkpoint bytes are collected, memory the allocator keeps after a free,
/// and the process's own code and threads (host memory only).
fn slack(parts: &[MemoryPart], runtime: bool) -> Option<u64> {
    let counted = parts
        .iter()
        .try_fold(0u64, |sum, p| sum.checked_add(p.bytes?))?;
    Some(counted / 10 + if runtime { 16 << 20 } else { 0 })
}

impl MemoryEstimate {
    /// The parts counted, largest first (a part too large to count first of all).
    pub fn parts(&self) -> &[MemoryPart] {
        &self.parts
    }

    /// Everything: the parts and the slack around them; `None` when a part, or the sum,
    /// overflows a u64.
    pub fn total(&self) -> Option<u64> {
        self.parts
            .iter()
            .try_fold(self.slack?, |sum, p| sum.checked_add(p.bytes?))
    }

    /// The parts in `place` alone (for a GPU backend, [`Place::Host`] is what the machine's
    /// memory must hold), with their own slack.
    pub fn only(&self, place: Place) -> MemoryEstimate {
        let parts: Vec<MemoryPart> = self
            .parts
            .iter()
            .copied()
            .filter(|p| p.place == place)
            .collect();
        MemoryEstimate {
            stage: self.stage,
            slack: slack(&parts, place == Place::Host),
            parts,
        }
    }

    fn new(stage: &'static str, mut parts: Vec<MemoryPart>) -> MemoryEstimate {
        parts.retain(|p| p.bytes != Some(0));
        // None (uncountable) sorts above every size.
        parts.sort_by_key(|p| std::cmp::Reverse(p.bytes.map_or(u128::MAX, u128::from)));
        MemoryEstimate {
            stage,
            slack: slack(&parts, true),
            parts,
        }
    }

    /// `about 1.5 GiB`, or `more than 16 EiB`.
    fn needs(&self) -> String {
        match self.total() {
            Some(total) => format!("about {}", show_bytes(Some(total))),
            None => show_bytes(None),
        }
    }
}

impl fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} needs {}", self.stage, self.needs())?;
        for p in &self.parts {
            write!(
                f,
                "\n  {:>10}  {} ({})",
                show_bytes(p.bytes),
                p.what,
                p.flag
            )?;
        }
        write!(
            f,
            "\n  {:>10}  allocator slack and the runtime itself",
            show_bytes(self.slack)
        )
    }
}

/// `1.5 GiB`; `None` reads as more than a u64 holds.
pub fn show_bytes(bytes: Option<u64>) -> String {
    let Some(bytes) = bytes else {
        return "more than 16 EiB".to_string();
    };
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Refuses an estimate larger than `available` bytes (`None`: unknown, so only an estimate
/// too large to count is refused), naming the total, what is available and the largest parts
/// with the flag that shrinks each.
pub fn check_fits(est: &MemoryEstimate, available: Option<u64>) -> Result<()> {
    const SHOWN: usize = 4;
    let fits = match (est.total(), available) {
        (None, _) => false,
        (Some(total), Some(available)) => total <= available,
        (Some(_), None) => true,
    };
    if fits {
        return Ok(());
    }
    let room = match available {
        Some(a) => format!("only {} is available", show_bytes(Some(a))),
        None => "no machine has that much".to_string(),
    };
    let mut message = format!(
        "{} of this run needs {} of memory and {room}; its largest parts, with the settings \
         that shrink each:",
        est.stage,
        est.needs()
    );
    for p in est.parts.iter().take(SHOWN) {
        message.push_str(&format!(
            "\n  {:>10}  {}: change {}",
            show_bytes(p.bytes),
            p.what,
            p.flag
        ));
    }
    bail!(message)
}

/// Refuses `est` when it cannot fit in this machine's free memory on `backend`: all of it on
/// the cpu backend, its host parts on a GPU backend (whose device parts live on the GPU).
pub fn check_on(est: &MemoryEstimate, backend: BackendChoice) -> Result<()> {
    let available = available_host_memory();
    match backend {
        BackendChoice::Cpu | BackendChoice::Reference => check_fits(est, available),
        BackendChoice::Cuda | BackendChoice::Wgpu => {
            // An uncountable device part still cannot fit anywhere.
            check_fits(&est.only(Place::Device), None)?;
            check_fits(&est.only(Place::Host), available)
        }
    }
}

/// The memory the machine can give this process now: Linux's `MemAvailable`, or less when
/// the process's cgroup (a container's memory limit) leaves less room. `None` where neither
/// can be read (other systems).
pub fn available_host_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo.as_deref().and_then(mem_available);
    let cgroup = cgroup_headroom(
        std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok(),
        std::fs::read_to_string("/sys/fs/cgroup/memory.current").ok(),
    );
    match (available, cgroup) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let rest = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let mut words = rest.split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// What a cgroup v2 limit leaves: `memory.max` (a number, or `max` for none) less
/// `memory.current`.
fn cgroup_headroom(max: Option<String>, current: Option<String>) -> Option<u64> {
    let max: u64 = max?.trim().parse().ok()?;
    let current: u64 = current?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

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
        crate::config::CropNorm::PerSet => crops * r,
        crate::config::CropNorm::Joint => n(1),
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
    let workers = n(datasets::workers(cfg));
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
    let workers = n(datasets::workers(cfg));
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
    let workers = n(datasets::workers(cfg));
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

    #[test]
    fn available_memory_reads_meminfo_and_the_cgroup_limit() {
        let meminfo = "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(mem_available(meminfo), Some(20_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(
            cgroup_headroom(Some("8589934592\n".into()), Some("1073741824\n".into())),
            Some(7 * GIB)
        );
        assert_eq!(
            cgroup_headroom(Some("max\n".into()), Some("1073741824\n".into())),
            None
        );
        #[cfg(target_os = "linux")]
        assert!(available_host_memory().is_some_and(|a| a > 0));
    }
}
