//! Build script, run on the host:
//!
//! 1. puts `memory.x` where cortex-m-rt's `link.x` finds it;
//! 2. makes the long-tailed digits subset the firmware fine-tunes on, from the repository's
//!    embedded UCI digits (`runtime/data/uci-digits/`), so no derived data is committed: the
//!    subset `runtime run --imbalance 10` trains on, that is the runtime's train split (every
//!    image but the last 50 of each class), then for class `c` of 10 its first
//!    `floor(n_max * (1/10)^(c/9))` images in file order, `n_max` the smallest class pool;
//! 3. pretrains the frozen prefix: the core's tiny ResNet trained with the core's `DsclStep` on
//!    the rest of the train split (the images the firmware does not fine-tune on), keeping its
//!    stem, `layer1` and `layer2` (see `src/pretrained.rs`). Deterministic (fixed seed), about
//!    ten seconds; it reruns only when its inputs change.
//!
//! The data's licence (CC BY 4.0) asks for attribution: the dataset's README is copied next to
//! the generated files and the firmware prints the attribution when it starts.
//!
//! A build script reports failure by panicking (cargo prints the message and stops the build),
//! hence the `expect`s.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use dscl_core::backend::prelude::*;
use dscl_core::nn::{Encoder, ResNetConfig, TensorLayout, TensorSet};
use dscl_core::train::{
    ContrastiveLoss, CropNorm, DsclBatch, DsclConfig, DsclModel, DsclStep, LrSchedule, SgdConfig,
    StepShape,
};
use dscl_cpu::CpuBackend;

#[allow(dead_code)] // the build script uses only part of the firmware's modules
#[path = "src/prefix.rs"]
mod prefix;
#[allow(dead_code)]
#[path = "src/rng.rs"]
mod rng;
#[allow(dead_code)]
#[path = "src/view.rs"]
mod view;

use prefix::Prefix;
use rng::SplitMix64;
use view::{PIXELS, SIDE, VIEW_LEN};

const DIGITS_DIR: &str = "../../runtime/data/uci-digits";
const COUNT: usize = 1797;
const CLASSES: usize = 10;
/// Test images per class held out by the runtime's split (used by neither stage here).
const TEST_PER_CLASS: usize = 50;
/// Head-to-tail ratio of the fine-tuning subset.
const IMBALANCE: f64 = 10.0;

/// Pretraining: the runtime's digits recipe (tau 0.2, key momentum 0.99, d = 32, SGD 0.9 /
/// 5e-4) at 8 px without PBSD, half a cosine from `PRE_LR`.
const PRE_BATCH: usize = 32;
const PRE_STEPS: usize = 1000;
const PRE_LR: f64 = 0.15;
const PRE_QUEUE: usize = 256;
const PRE_DIM: usize = 32;
const PRE_SEED: u64 = 7;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    for f in ["build.rs", "src/prefix.rs", "src/rng.rs", "src/view.rs"] {
        println!("cargo:rerun-if-changed={f}");
    }

    let dir = Path::new(DIGITS_DIR);
    for f in ["images.u8", "labels.u8", "README.md"] {
        println!("cargo:rerun-if-changed={}", dir.join(f).display());
    }
    let images = fs::read(dir.join("images.u8")).expect("read the UCI digits images");
    let labels = fs::read(dir.join("labels.u8")).expect("read the UCI digits labels");
    assert_eq!(images.len(), COUNT * PIXELS, "images.u8 size");
    assert_eq!(labels.len(), COUNT, "labels.u8 size");
    assert!(
        labels.iter().all(|&l| (l as usize) < CLASSES),
        "labels in 0..10"
    );
    fs::copy(dir.join("README.md"), out.join("README.md")).expect("copy the attribution");

    let (subset, counts, rest) = split(&labels);
    let mut subset_images = Vec::new();
    for &i in &subset {
        subset_images.extend_from_slice(&images[i * PIXELS..(i + 1) * PIXELS]);
    }
    let subset_labels: Vec<u8> = subset.iter().map(|&i| labels[i]).collect();
    fs::write(out.join("digits-lt-images.u8"), &subset_images).expect("write images");
    fs::write(out.join("digits-lt-labels.u8"), &subset_labels).expect("write labels");
    fs::write(
        out.join("digits_lt.rs"),
        format!(
            "/// Images in the long-tailed subset.\npub const COUNT: usize = {};\n\
             /// Images of each class (class 0 is the head, class 9 the tail).\n\
             pub const CLASS_COUNTS: [usize; {CLASSES}] = {counts:?};\n\
             /// Head-to-tail ratio.\npub const IMBALANCE: f64 = {IMBALANCE:?};\n",
            subset.len()
        ),
    )
    .expect("write digits_lt.rs");

    let (weights, final_loss) = pretrain(&images, &labels, &rest);
    fs::write(out.join("prefix.f32"), weights).expect("write prefix.f32");
    fs::write(
        out.join("pretrained.rs"),
        format!(
            "/// Images the prefix was pretrained on (none in the fine-tuning subset).\n\
             pub const IMAGES: usize = {};\n/// Pretraining steps and batch.\n\
             pub const STEPS: usize = {PRE_STEPS};\npub const BATCH: usize = {PRE_BATCH};\n\
             /// DSCL loss of the last pretraining step.\npub const FINAL_LOSS: f64 = {final_loss:?};\n",
            rest.len()
        ),
    )
    .expect("write pretrained.rs");
}

/// The fine-tuning subset (indices in file order), its per-class counts, and the rest of the
/// train split (the pretraining images).
fn split(labels: &[u8]) -> (Vec<usize>, [usize; CLASSES], Vec<usize>) {
    // The runtime's train split: walking backwards, the first 50 of each class are the test set.
    let mut test_left = [TEST_PER_CLASS; CLASSES];
    let mut is_test = vec![false; COUNT];
    for (i, &l) in labels.iter().enumerate().rev() {
        if test_left[l as usize] > 0 {
            test_left[l as usize] -= 1;
            is_test[i] = true;
        }
    }
    let train: Vec<usize> = (0..COUNT).filter(|&i| !is_test[i]).collect();
    let mut pool = [0usize; CLASSES];
    for &i in &train {
        pool[labels[i] as usize] += 1;
    }
    // Exponential profile, computed as the runtime (and the reference Python) does.
    let n_max = *pool.iter().min().expect("ten classes");
    let factor = 1.0 / IMBALANCE;
    let mut counts = [0usize; CLASSES];
    for (c, n) in counts.iter_mut().enumerate() {
        let q = (n_max as f64 * factor.powf(c as f64 / (CLASSES as f64 - 1.0))).floor() as usize;
        *n = q.clamp(1, n_max);
    }
    let mut quota = counts;
    let (mut subset, mut rest) = (Vec::new(), Vec::new());
    for &i in &train {
        let q = &mut quota[labels[i] as usize];
        if *q > 0 {
            *q -= 1;
            subset.push(i);
        } else {
            rest.push(i);
        }
    }
    (subset, counts, rest)
}

/// Trains the tiny ResNet with `DsclStep` on the images `pool` and returns its prefix's
/// parameters then running statistics (little-endian f32, in [`Prefix`]'s order) and the last
/// step's loss.
fn pretrain(images: &[u8], labels: &[u8], pool: &[usize]) -> (Vec<u8>, f64) {
    let mut arena = vec![0.0f32; 1 << 21];
    let mut index_arena = vec![0u32; 1 << 12];
    let be = CpuBackend::from_arena(&mut arena, &mut index_arena);
    let mut rng = SplitMix64::new(PRE_SEED);
    let encoder = Encoder::new(ResNetConfig::tiny(), PRE_DIM).expect("tiny encoder");
    let config = DsclConfig {
        loss: ContrastiveLoss::Dscl { beta: 8.0 },
        temperature: 0.2,
        pbsd_weight: 0.0,
        crops: 1,
        queue_len: PRE_QUEUE,
        key_momentum: 0.99,
        sgd: SgdConfig::STAGE1,
        replicas: 1,
        crop_norm: CropNorm::Joint,
    };
    let shape = StepShape {
        batch: PRE_BATCH,
        image_size: SIDE,
        crop_size: SIDE / 2,
        num_classes: CLASSES as u32,
    };
    let mut step = DsclStep::new(&be, &encoder, config, shape).expect("plan the step");
    let mut model = DsclModel::new(&be, &encoder, PRE_QUEUE, &mut rng).expect("model");
    let mut queries = be.alloc(PRE_BATCH * VIEW_LEN).expect("alloc");
    let mut keys = be.alloc(PRE_BATCH * VIEW_LEN).expect("alloc");
    // No crops: PBSD is off, so the step never reads them.
    let none = be.alloc(1).expect("alloc");
    let mut batch_labels = be.alloc_index(PRE_BATCH).expect("alloc");
    let schedule = LrSchedule::WarmupCosine {
        lr: PRE_LR,
        warmup_epochs: 0.0,
        epochs: PRE_STEPS as f64,
    };
    let mut view = [0.0f32; VIEW_LEN];
    let mut y = [0u32; PRE_BATCH];
    let mut loss = f64::NAN;
    for s in 0..PRE_STEPS {
        for (j, label) in y.iter_mut().enumerate() {
            let i = pool[rng.below(pool.len())];
            *label = labels[i] as u32;
            let image = &images[i * PIXELS..(i + 1) * PIXELS];
            for buf in [&mut queries, &mut keys] {
                let dx = rng.below(3) as isize - 1;
                let dy = rng.below(3) as isize - 1;
                view::write_view(image, dx, dy, &mut view);
                be.upload(buf, j * VIEW_LEN, &view).expect("upload");
            }
        }
        be.upload_index(&mut batch_labels, 0, &y).expect("upload");
        let batch = DsclBatch {
            queries: &queries,
            keys: &keys,
            crops: &none,
            crop_boxes: &none,
            labels: &batch_labels,
            key_shuffle: None,
        };
        loss = step
            .step(&be, &encoder, &mut model, &batch, schedule.lr_at(s as f64))
            .expect("pretraining step")
            .total;
    }

    let mut params = TensorLayout::new();
    let mut state = TensorLayout::new();
    Prefix::new(prefix::prefix_config(), &mut params, &mut state).expect("prefix layout");
    let mut bytes = Vec::new();
    export(&params, &encoder.params, &model.query.params, &mut bytes);
    export(&state, &encoder.state, &model.query_state, &mut bytes);
    (bytes, loss)
}

/// Appends the tensors of `prefix` (by name, in its order) from `set` (laid out by `layout`).
fn export(
    prefix: &TensorLayout,
    layout: &TensorLayout,
    set: &TensorSet<CpuBackend<'_>>,
    bytes: &mut Vec<u8>,
) {
    for spec in prefix.specs() {
        let id = layout
            .find(&spec.name)
            .unwrap_or_else(|| panic!("{} is not a tiny ResNet tensor", spec.name));
        let values = set.get(id);
        assert_eq!(
            values.len(),
            spec.len(),
            "{} has a different shape",
            spec.name
        );
        for v in values.iter() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
}
