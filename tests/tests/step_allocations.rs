//! "A step allocates nothing": once planned, a complete DSCL + PBSD step, a cross-entropy
//! step and a tail fine-tuning step make no heap allocation (counted by a global allocator wrapper).
//!
//! The steps run on the f32 reference backend, whose kernels allocate nothing, so the count
//! is that of the step code itself (layers, losses, optimizer, queue). The CPU backend's GEMM
//! comes from the `gemm` crate, which allocates its packing buffers on each call; that is the
//! library's behaviour, not the step's, and the arena build without `alloc` avoids it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use dscl_core::backend::prelude::*;
use dscl_core::nn::{
    CutEncoder, Encoder, EncoderTail, ResNet, ResNetClassifier, ResNetConfig, TensorLayout,
    TensorSet,
};
use dscl_core::reference::ReferenceBackend;
use dscl_core::train::{
    ClassifierStep, ContrastiveLoss, DsclBatch, DsclConfig, DsclModel, DsclStep, SgdConfig,
    StepShape, TailConfig, TailModel, TailStep, Trainable,
};
use rand::rngs::Xoshiro256PlusPlus;
use rand::SeedableRng;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn filled(be: &ReferenceBackend<f32>, len: usize, f: impl Fn(usize) -> f32) -> Vec<f32> {
    let _ = be;
    (0..len).map(f).collect()
}

#[test]
fn planned_steps_allocate_nothing() {
    // One group, and two replica groups with shuffled key batch norm (the per-group rows,
    // the shuffle and the per-set crop statistics).
    planned_steps(1, None);
    planned_steps(2, Some(&[5, 0, 7, 2, 1, 6, 3, 4]));
    // In the same test: the count is global, and tests run on parallel threads.
    planned_tail_step();
}

/// The tail step of an encoder cut after `layer2` (the firmware's step).
fn planned_tail_step() {
    let be = ReferenceBackend::<f32>::new();
    let config = ResNetConfig::tiny();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
    let mut model = TailModel::empty(&be, 16, 8).unwrap();
    let (mut params, mut state) = (TensorLayout::new(), TensorLayout::new());
    let prefix = ResNet::new(config.cut(2), &mut params, &mut state).unwrap();
    model.zero_prefix(&be, &params, &state).unwrap();
    let (mut params, mut state) = (TensorLayout::new(), TensorLayout::new());
    let tail = EncoderTail::new(config, 2, 8, &mut params, &mut state).unwrap();
    model.tail.init(&be, &params, &state, &mut rng).unwrap();
    let encoder: CutEncoder<2, 1> = CutEncoder { prefix, tail };
    let tail_config = TailConfig {
        batch: 8,
        prefix_chunk: 2,
        loss: ContrastiveLoss::Dscl { beta: 8.0 },
        temperature: 0.2,
        key_momentum: 0.99,
        sgd: SgdConfig::STAGE1,
    };
    let mut step = TailStep::new(&be, &encoder, tail_config, (8, 8), 16, 3).unwrap();
    let views = filled(&be, 2 * 3 * 8 * 8, |i| ((i * 37) % 11) as f32 / 11.0);
    let labels = [0, 1, 2, 0, 1, 2, 0, 0];
    let mut run = |model: &mut TailModel<_>| {
        step.step(
            &be,
            &encoder,
            model,
            &labels,
            |_, _, input| be.upload(input, 0, &views),
            0.01,
        )
        .unwrap()
    };
    run(&mut model);
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..3 {
        run(&mut model);
    }
    let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert_eq!(during, 0, "heap allocations during planned tail steps");
}

fn planned_steps(replicas: usize, key_shuffle: Option<&[u32]>) {
    let be = ReferenceBackend::<f32>::new();
    let encoder = Encoder::new(ResNetConfig::tiny(), 16).unwrap();
    let config = DsclConfig {
        crops: 2,
        queue_len: 32,
        replicas,
        ..DsclConfig::default()
    };
    let shape = StepShape {
        batch: 8,
        image_size: 8,
        crop_size: 4,
        num_classes: 3,
    };
    let mut step = DsclStep::new(&be, &encoder, config, shape).unwrap();
    let mut model = DsclModel::new(
        &be,
        &encoder,
        config.queue_len,
        &mut Xoshiro256PlusPlus::seed_from_u64(0),
    )
    .unwrap();
    let upload = |v: Vec<f32>| {
        let mut b = be.alloc(v.len()).unwrap();
        be.upload(&mut b, 0, &v).unwrap();
        b
    };
    let image = 8 * 3 * 8 * 8;
    let queries = upload(filled(&be, image, |i| ((i * 37) % 11) as f32 / 11.0));
    let keys = upload(filled(&be, image, |i| ((i * 17) % 13) as f32 / 13.0));
    let crops = upload(filled(&be, 2 * 8 * 3 * 16, |i| ((i * 7) % 5) as f32 / 5.0));
    let boxes = upload(
        (0..16)
            .flat_map(|r| [(r % 8) as f32, 1.0, 2.0, 5.0, 6.0])
            .collect(),
    );
    let mut labels = be.alloc_index(8).unwrap();
    be.upload_index(&mut labels, 0, &[0, 1, 2, 0, 1, 2, 0, 0])
        .unwrap();
    let batch = DsclBatch {
        queries: &queries,
        keys: &keys,
        crops: &crops,
        crop_boxes: &boxes,
        labels: &labels,
        key_shuffle,
    };
    step.step(&be, &encoder, &mut model, &batch, 0.01).unwrap();

    let classifier = ResNetClassifier::new(ResNetConfig::tiny(), 3).unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let mut weights = Trainable::initialised(&be, &classifier.params, &mut rng).unwrap();
    let mut state = TensorSet::initialised(&be, &classifier.state, &mut rng).unwrap();
    let mut ce = ClassifierStep::new(&be, &classifier.backbone, &classifier.fc, 8, 8).unwrap();
    let sgd = SgdConfig::STAGE1;
    let mut ce_step = |weights: &mut Trainable<_>, state: &mut TensorSet<_>| {
        ce.cross_entropy_step(
            &be,
            &classifier.backbone,
            &classifier.fc,
            weights,
            state,
            &queries,
            &labels,
            &sgd,
            0.01,
        )
        .unwrap()
    };
    ce_step(&mut weights, &mut state);

    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..3 {
        step.step(&be, &encoder, &mut model, &batch, 0.01).unwrap();
        ce_step(&mut weights, &mut state);
    }
    let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert_eq!(
        during, 0,
        "heap allocations during planned steps with {replicas} replica group(s)"
    );
}
