//! Every layer's backward, a whole tiny ResNet + head + DSCL + PBSD step, checked against
//! central finite differences in f64 on the reference backend.
//!
//! Each check takes `L = sum(r * y)` for a fixed random `r`, runs backward with `dy = r`, and
//! compares the analytic gradient with `(L(v + e) - L(v - e)) / 2e` at sampled coordinates of
//! every input and parameter tensor. Seeds are fixed, so a pass is reproducible; the step
//! `e = 1e-7` keeps ReLU and max-pool switches between the two evaluations unlikely.

use dscl_core::backend::prelude::*;
use dscl_core::nn::batch_norm::StatGroups;
use dscl_core::nn::{
    BatchNorm2d, BatchNormSaved, BlockKind, BnMode, Conv2d, Encoder, GlobalAvgPool, L2Normalize,
    Linear, MaxPool2d, ProjectionHead, ResNetConfig, ResidualBlock, RoiAlign, Scratch,
    TensorLayout, TensorSet,
};
use dscl_core::reference::{ReferenceBackend, ReferenceBuffer, ReferenceIndexBuffer};
use dscl_core::train::{
    ContrastiveLoss, CropNorm, DsclBatch, DsclConfig, DsclModel, DsclStep, SgdConfig, StepShape,
};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

type Rb = ReferenceBackend<f64>;
type Buf = ReferenceBuffer<f64>;

const EPS: f64 = 1e-7;
const SAMPLES: usize = 24;

struct Gen(Xoshiro256PlusPlus);

impl Gen {
    fn new(seed: u64) -> Self {
        Gen(Xoshiro256PlusPlus::seed_from_u64(seed))
    }
    fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn values(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n)
            .map(|_| scale * (2.0 * self.uniform() - 1.0))
            .collect()
    }
    fn index(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }
}

fn buf(v: &[f64]) -> Buf {
    Buf::from_vec(v.to_vec())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn flat(set: &TensorSet<Rb>) -> Vec<f64> {
    set.buffers()
        .iter()
        .flat_map(|b| b.as_slice().iter().copied())
        .collect()
}

fn set_flat(set: &mut TensorSet<Rb>, values: &[f64]) {
    let mut at = 0;
    for b in set.buffers_mut() {
        let s = b.as_mut_slice();
        let n = s.len();
        s.copy_from_slice(&values[at..at + n]);
        at += n;
    }
}

/// Compares `analytic` with central differences of `loss` around `at`, at up to `SAMPLES`
/// coordinates (all of them for small tensors).
fn check(name: &str, at: &[f64], analytic: &[f64], gen: &mut Gen, loss: impl FnMut(&[f64]) -> f64) {
    let coords: Vec<usize> = if at.len() <= SAMPLES {
        (0..at.len()).collect()
    } else {
        (0..SAMPLES).map(|_| gen.index(at.len())).collect()
    };
    check_at(name, at, analytic, &coords, loss);
}

fn check_at(
    name: &str,
    at: &[f64],
    analytic: &[f64],
    coords: &[usize],
    mut loss: impl FnMut(&[f64]) -> f64,
) {
    assert_eq!(at.len(), analytic.len(), "{name}: gradient length");
    let mut v = at.to_vec();
    for &i in coords {
        v[i] = at[i] + EPS;
        let up = loss(&v);
        v[i] = at[i] - EPS;
        let down = loss(&v);
        v[i] = at[i];
        let numeric = (up - down) / (2.0 * EPS);
        let err = (numeric - analytic[i]).abs();
        assert!(
            err <= 1e-5 * analytic[i].abs().max(1.0),
            "{name}[{i}]: analytic {} vs finite difference {numeric}",
            analytic[i]
        );
    }
}

/// A parameter set initialised with random values (not torchvision's scheme, so batch-norm
/// gammas are not 1 and the checks see every term).
fn random_params(be: &Rb, layout: &TensorLayout, gen: &mut Gen) -> TensorSet<Rb> {
    let mut set = TensorSet::zeros(be, layout).unwrap();
    let n = flat(&set).len();
    set_flat(&mut set, &gen.values(n, 0.5));
    set
}

#[test]
fn conv2d() {
    let be = Rb::new();
    let mut gen = Gen::new(1);
    let mut layout = TensorLayout::new();
    let conv = Conv2d::new(&mut layout, "conv", 3, 4, 3, 2, 1).unwrap();
    let shape = conv.shape(2, 7, 6);
    let mut params = random_params(&be, &layout, &mut gen);
    let x = gen.values(shape.input_len(), 1.0);
    let r = gen.values(shape.output_len(), 1.0);
    let mut ws = be.alloc(be.conv2d_workspace_len(&shape).max(1)).unwrap();
    let forward = |params: &TensorSet<Rb>, x: &[f64], ws: &mut Buf| {
        let mut y = be.alloc(shape.output_len()).unwrap();
        conv.forward(&be, params, &shape, &buf(x), &mut y, ws)
            .unwrap();
        dot(y.as_slice(), &r)
    };
    let mut grads = TensorSet::zeros(&be, &layout).unwrap();
    let mut dx = be.alloc(x.len()).unwrap();
    conv.backward(
        &be,
        &params,
        &mut grads,
        &shape,
        &buf(&x),
        &buf(&r),
        Some(&mut dx),
        &mut ws,
    )
    .unwrap();
    check("conv dx", &x, dx.as_slice(), &mut gen, |v| {
        forward(&params, v, &mut ws)
    });
    let p0 = flat(&params);
    check("conv dW", &p0, &flat(&grads), &mut gen, |v| {
        set_flat(&mut params, v);
        forward(&params, &x, &mut ws)
    });
}

#[test]
fn batch_norm_training() {
    batch_norm_gradients(StatGroups::WHOLE);
}

/// Two statistics groups (replicas without synchronised batch norm): each half of the batch
/// is normalised by its own statistics, and the gradients follow.
#[test]
fn batch_norm_training_in_two_statistics_groups() {
    batch_norm_gradients(StatGroups {
        groups: 2,
        running_every: 2,
    });
}

fn batch_norm_gradients(groups: StatGroups) {
    let be = Rb::new();
    let mut gen = Gen::new(2);
    let (mut layout, mut state_layout) = (TensorLayout::new(), TensorLayout::new());
    let bn = BatchNorm2d::new(&mut layout, &mut state_layout, "bn", 3, false).unwrap();
    let shape = bn.shape(4, 5, groups);
    let mut params = random_params(&be, &layout, &mut gen);
    let mut state = TensorSet::zeros(&be, &state_layout).unwrap();
    let x = gen.values(shape.len(), 2.0);
    let r = gen.values(shape.len(), 1.0);
    let mut saved = BatchNormSaved::new(&be, &shape).unwrap();
    let mut forward = |params: &TensorSet<Rb>, x: &[f64], saved: &mut BatchNormSaved<Rb>| {
        let mut y = be.alloc(shape.len()).unwrap();
        bn.forward_train(&be, params, &mut state, &shape, &buf(x), &mut y, saved)
            .unwrap();
        dot(y.as_slice(), &r)
    };
    forward(&params, &x, &mut saved);
    let mut grads = TensorSet::zeros(&be, &layout).unwrap();
    let mut dx = be.alloc(x.len()).unwrap();
    bn.backward(
        &be,
        &params,
        &mut grads,
        &shape,
        &buf(&x),
        &buf(&r),
        &saved,
        &mut dx,
    )
    .unwrap();
    let mut scratch_saved = BatchNormSaved::new(&be, &shape).unwrap();
    check("bn dx", &x, dx.as_slice(), &mut gen, |v| {
        forward(&params, v, &mut scratch_saved)
    });
    let p0 = flat(&params);
    check("bn dgamma dbeta", &p0, &flat(&grads), &mut gen, |v| {
        set_flat(&mut params, v);
        forward(&params, &x, &mut scratch_saved)
    });
}

#[test]
fn linear() {
    let be = Rb::new();
    let mut gen = Gen::new(3);
    let mut layout = TensorLayout::new();
    let fc = Linear::new(&mut layout, "fc", 5, 4).unwrap();
    let rows = 3;
    let mut params = random_params(&be, &layout, &mut gen);
    let x = gen.values(rows * 5, 1.0);
    let r = gen.values(rows * 4, 1.0);
    let forward = |params: &TensorSet<Rb>, x: &[f64]| {
        let mut y = be.alloc(rows * 4).unwrap();
        fc.forward(&be, params, rows, &buf(x), &mut y).unwrap();
        dot(y.as_slice(), &r)
    };
    let mut grads = TensorSet::zeros(&be, &layout).unwrap();
    let mut dx = be.alloc(x.len()).unwrap();
    fc.backward(
        &be,
        &params,
        &mut grads,
        rows,
        &buf(&x),
        &buf(&r),
        Some(&mut dx),
    )
    .unwrap();
    check("linear dx", &x, dx.as_slice(), &mut gen, |v| {
        forward(&params, v)
    });
    let p0 = flat(&params);
    check("linear dW db", &p0, &flat(&grads), &mut gen, |v| {
        set_flat(&mut params, v);
        forward(&params, &x)
    });
}

#[test]
fn max_pool_and_global_average_pool() {
    let be = Rb::new();
    let mut gen = Gen::new(4);
    let mp = MaxPool2d {
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    let shape = mp.shape(2, 2, 7, 7);
    let x = gen.values(shape.input_len(), 1.0);
    let r = gen.values(shape.output_len(), 1.0);
    let forward = |x: &[f64]| {
        let mut y = be.alloc(shape.output_len()).unwrap();
        let mut arg = be.alloc_index(shape.output_len()).unwrap();
        mp.forward(&be, &shape, &buf(x), &mut y, &mut arg).unwrap();
        (dot(y.as_slice(), &r), arg)
    };
    let (_, arg) = forward(&x);
    let mut dx = be.alloc(x.len()).unwrap();
    mp.backward(&be, &shape, &buf(&r), &arg, &mut dx).unwrap();
    check("max-pool dx", &x, dx.as_slice(), &mut gen, |v| forward(v).0);

    let gap = GlobalAvgPool {
        batch: 2,
        channels: 3,
        spatial: 5,
    };
    let x = gen.values(30, 1.0);
    let r = gen.values(6, 1.0);
    let mut dx = be.alloc(30).unwrap();
    gap.backward(&be, &buf(&r), &mut dx).unwrap();
    check("global-average-pool dx", &x, dx.as_slice(), &mut gen, |v| {
        let mut y = be.alloc(6).unwrap();
        gap.forward(&be, &buf(v), &mut y).unwrap();
        dot(y.as_slice(), &r)
    });
}

#[test]
fn roi_align_and_normalize() {
    let be = Rb::new();
    let mut gen = Gen::new(5);
    // Boxes in pixels of a 32 px image over a stride-4 8x8 map, as PBSD's crops.
    let roi = RoiAlign::new(2, 3, 8, 8, 3, 4).unwrap();
    let boxes = buf(&[
        0.0, 1.5, 2.0, 20.0, 17.5, //
        1.0, 0.0, 0.0, 31.0, 31.0, //
        1.0, 10.2, 3.7, 14.9, 30.1,
    ]);
    let x = gen.values(roi.shape.features_len(), 1.0);
    let r = gen.values(roi.shape.output_len(), 1.0);
    let mut dx = be.alloc(x.len()).unwrap();
    be.fill(&mut dx, 0, x.len(), 0.0).unwrap();
    roi.backward(&be, &buf(&r), &boxes, &mut dx).unwrap();
    check("roi-align d features", &x, dx.as_slice(), &mut gen, |v| {
        let mut y = be.alloc(roi.shape.output_len()).unwrap();
        roi.forward(&be, &buf(v), &boxes, &mut y).unwrap();
        dot(y.as_slice(), &r)
    });

    let (rows, cols) = (4, 6);
    let x = gen.values(rows * cols, 1.0);
    let r = gen.values(rows * cols, 1.0);
    let mut norm = L2Normalize::new(&be, rows, cols).unwrap();
    let mut y = be.alloc(rows * cols).unwrap();
    norm.forward(&be, &buf(&x), &mut y).unwrap();
    let mut dx = be.alloc(rows * cols).unwrap();
    norm.backward(&be, &y, &buf(&r), &mut dx).unwrap();
    check("l2-normalize dx", &x, dx.as_slice(), &mut gen, |v| {
        let mut n = L2Normalize::new(&be, rows, cols).unwrap();
        let mut y = be.alloc(rows * cols).unwrap();
        n.forward(&be, &buf(v), &mut y).unwrap();
        dot(y.as_slice(), &r)
    });
}

fn check_block(kind: BlockKind, in_channels: usize, width: usize, stride: usize, seed: u64) {
    let be = Rb::new();
    let mut gen = Gen::new(seed);
    let (mut layout, mut state_layout) = (TensorLayout::new(), TensorLayout::new());
    let block = ResidualBlock::new(
        &mut layout,
        &mut state_layout,
        "block",
        kind,
        in_channels,
        width,
        stride,
        false,
    )
    .unwrap();
    let (batch, h, w) = (3, 6, 5);
    let mut record = block.plan(&be, batch, h, w, StatGroups::WHOLE).unwrap();
    let mut scratch = Scratch::new(&be, block.needs(&be, &record)).unwrap();
    let mut params = random_params(&be, &layout, &mut gen);
    let mut state = TensorSet::zeros(&be, &state_layout).unwrap();
    let x = gen.values(record.in_len, 1.0);
    let r = gen.values(record.out_len, 1.0);
    let mut forward = |params: &TensorSet<Rb>, x: &[f64]| {
        let mut rec = block.plan(&be, batch, h, w, StatGroups::WHOLE).unwrap();
        block
            .forward(
                &be,
                params,
                BnMode::Train(&mut state),
                &mut rec,
                &buf(x),
                &mut scratch.tmp,
                &mut scratch.conv_workspace,
            )
            .unwrap();
        dot(rec.out.as_slice(), &r)
    };
    let mut state0 = TensorSet::zeros(&be, &state_layout).unwrap();
    let mut s2 = Scratch::new(&be, block.needs(&be, &record)).unwrap();
    block
        .forward(
            &be,
            &params,
            BnMode::Train(&mut state0),
            &mut record,
            &buf(&x),
            &mut s2.tmp,
            &mut s2.conv_workspace,
        )
        .unwrap();
    let mut grads = TensorSet::zeros(&be, &layout).unwrap();
    let mut dx = be.alloc(record.in_len).unwrap();
    // The block reuses dy's storage, so it gets a scratch-sized buffer holding r.
    let mut dy = be.alloc(block.needs(&be, &record).activation).unwrap();
    be.upload(&mut dy, 0, &r).unwrap();
    block
        .backward(
            &be,
            &params,
            &mut grads,
            &record,
            &buf(&x),
            &mut dy,
            Some(&mut dx),
            &mut s2.tmp,
            &mut s2.conv_workspace,
        )
        .unwrap();
    let name = format!("{kind:?} block {in_channels}->{width} stride {stride}");
    check(&format!("{name} dx"), &x, dx.as_slice(), &mut gen, |v| {
        forward(&params, v)
    });
    let p0 = flat(&params);
    check(
        &format!("{name} dparams"),
        &p0,
        &flat(&grads),
        &mut gen,
        |v| {
            set_flat(&mut params, v);
            forward(&params, &x)
        },
    );
}

#[test]
fn basic_block_identity_and_projection() {
    check_block(BlockKind::Basic, 4, 4, 1, 6);
    check_block(BlockKind::Basic, 4, 6, 2, 7);
}

#[test]
fn bottleneck_identity_and_projection() {
    check_block(BlockKind::Bottleneck, 8, 2, 1, 8);
    check_block(BlockKind::Bottleneck, 4, 3, 2, 9);
}

#[test]
fn projection_head() {
    let be = Rb::new();
    let mut gen = Gen::new(10);
    let mut layout = TensorLayout::new();
    let head = ProjectionHead::new(&mut layout, 6, 4).unwrap();
    let rows = 3;
    let mut params = random_params(&be, &layout, &mut gen);
    let x = gen.values(rows * 6, 1.0);
    let r = gen.values(rows * 4, 1.0);
    let mut record = head.plan(&be, rows).unwrap();
    head.forward(&be, &params, &mut record, &buf(&x)).unwrap();
    let mut grads = TensorSet::zeros(&be, &layout).unwrap();
    let mut dx = be.alloc(rows * 6).unwrap();
    head.backward(
        &be,
        &params,
        &mut grads,
        &mut record,
        &buf(&x),
        &buf(&r),
        &mut dx,
    )
    .unwrap();
    let forward = |params: &TensorSet<Rb>, x: &[f64]| {
        let mut rec = head.plan(&be, rows).unwrap();
        head.forward(&be, params, &mut rec, &buf(x)).unwrap();
        dot(rec.out.as_slice(), &r)
    };
    check("head dx", &x, dx.as_slice(), &mut gen, |v| {
        forward(&params, v)
    });
    let p0 = flat(&params);
    check("head dparams", &p0, &flat(&grads), &mut gen, |v| {
        set_flat(&mut params, v);
        forward(&params, &x)
    });
}

/// The whole stage-1 objective on a tiny ResNet: DSCL over queries, keys and a partly filled
/// queue, plus PBSD from ROI-aligned teachers to two crops per image, all crops in one
/// batch-norm pass.
#[test]
fn whole_tiny_resnet_dscl_pbsd_step() {
    whole_step_gradients(1, CropNorm::Joint, None);
}

/// The same objective in two replica groups of two images: batch norm per group and per crop
/// set, the keys' batch norm shuffled across the groups, each group's losses over its own
/// rows, and the mean over the groups (the gradients scaled by 1 / R, as DDP averages them).
#[test]
fn whole_tiny_resnet_step_in_two_replica_groups() {
    whole_step_gradients(2, CropNorm::PerSet, Some(&[2, 0, 3, 1]));
}

fn whole_step_gradients(replicas: usize, crop_norm: CropNorm, key_shuffle: Option<&[u32]>) {
    let be = Rb::new();
    let mut gen = Gen::new(11);
    let config = ResNetConfig {
        zero_init_residual: false,
        ..ResNetConfig::tiny()
    };
    let encoder = Encoder::new(config, 8).unwrap();
    let shape = StepShape {
        batch: 4,
        image_size: 8,
        crop_size: 4,
        num_classes: 3,
    };
    let dscl = DsclConfig {
        loss: ContrastiveLoss::Dscl { beta: 8.0 },
        temperature: 0.5,
        pbsd_weight: 1.5,
        crops: 2,
        queue_len: 6,
        key_momentum: 0.9,
        sgd: SgdConfig::STAGE1,
        replicas,
        crop_norm,
    };
    let mut step = DsclStep::new(&be, &encoder, dscl, shape).unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(12);
    let mut model = DsclModel::new(&be, &encoder, dscl.queue_len, &mut rng).unwrap();
    // Random parameters (gammas away from 1) and four real keys in the queue.
    let n = flat(&model.query.params).len();
    set_flat(&mut model.query.params, &gen.values(n, 0.4));
    let mut queued = gen.values(4 * 8, 1.0);
    for row in queued.chunks_mut(8) {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    let queue_labels = ReferenceIndexBuffer::from_vec(vec![0, 2, 1, 0]);
    model
        .queue
        .enqueue(&be, &buf(&queued), &queue_labels, 4)
        .unwrap();

    let image = shape.batch * 3 * 8 * 8;
    let queries = buf(&gen.values(image, 1.0));
    let keys = buf(&gen.values(image, 1.0));
    let crops = buf(&gen.values(2 * shape.batch * 3 * 4 * 4, 1.0));
    let mut boxes = Vec::new();
    for c in 0..2 {
        for i in 0..shape.batch {
            let (x0, y0) = ((c + i) as f64 * 0.7, (i as f64) * 0.9);
            boxes.extend_from_slice(&[i as f64, x0, y0, x0 + 4.3, y0 + 3.9]);
        }
    }
    let boxes = buf(&boxes);
    // Class 1 has a single sample in the batch.
    let labels = ReferenceIndexBuffer::from_vec(vec![0, 1, 0, 2]);
    let batch = DsclBatch {
        queries: &queries,
        keys: &keys,
        crops: &crops,
        crop_boxes: &boxes,
        labels: &labels,
        key_shuffle,
    };

    let losses = step
        .forward_backward(&be, &encoder, &mut model, &batch)
        .unwrap();
    assert!(losses.contrastive > 0.0 && losses.pbsd > 0.0, "{losses:?}");
    step.freeze_teachers(true);
    let analytic = flat(&model.query.grads);
    let p0 = flat(&model.query.params);
    // Two coordinates of every tensor, so each layer's gradient is exercised.
    let mut probe = Gen::new(13);
    let mut coords = Vec::new();
    let mut offset = 0;
    for b in model.query.params.buffers() {
        let len = b.as_slice().len();
        coords.push(offset + probe.index(len));
        coords.push(offset + probe.index(len));
        offset += len;
    }
    check_at("tiny resnet step dparams", &p0, &analytic, &coords, |v| {
        set_flat(&mut model.query.params, v);
        step.forward_backward(&be, &encoder, &mut model, &batch)
            .unwrap()
            .total
    });
}
