//! Training sanity: the complete stage-1 step (DSCL + PBSD, momentum encoder, queue, SGD)
//! drives the loss of a tiny ResNet down on 64 fixed images; the cross-entropy baseline and
//! the stage-2 linear classifier fit them; and each of those steps waits on the device once.
//! Runs on the CPU backend in f32.

use std::cell::Cell;

use dscl_core::backend::prelude::*;
use dscl_core::desc::{
    BatchNormShape, ContrastiveRowsDesc, Conv2dShape, GemmDesc, PoolShape, RoiAlignShape, RowsDesc,
    SgdParams,
};
use dscl_core::nn::{
    Encoder, LinearClassifier, ResNetClassifier, ResNetConfig, Scratch, TensorSet,
};
use dscl_core::train::{
    ClassifierStep, ContrastiveLoss, CropNorm, DsclBatch, DsclConfig, DsclModel, DsclStep,
    LrSchedule, SgdConfig, StepShape, Trainable,
};
use dscl_core::{Backend, Error, Fault, Result};
use dscl_cpu::CpuBackend;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

#[path = "train_tiny/classifier_ranks.rs"]
mod classifier_ranks;
#[path = "train_tiny/tail.rs"]
mod tail;

const IMAGES: usize = 64;
const CLASSES: usize = 4;
const SIZE: usize = 8;
const CROP: usize = 4;

struct Gen(Xoshiro256PlusPlus);

impl Gen {
    fn new(seed: u64) -> Self {
        Gen(Xoshiro256PlusPlus::seed_from_u64(seed))
    }
    fn uniform(&mut self) -> f32 {
        (self.0.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let (u1, u2) = (1.0 - self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
    fn index(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }
}

/// 64 images of 4 classes: each class a fixed random 3x8x8 pattern, each image its class
/// pattern plus its own fixed noise. Long-tailed: 32, 16, 10, 6 images.
fn dataset() -> (Vec<Vec<f32>>, Vec<u32>) {
    let mut gen = Gen::new(7);
    let pixels = 3 * SIZE * SIZE;
    let patterns: Vec<Vec<f32>> = (0..CLASSES)
        .map(|_| (0..pixels).map(|_| gen.normal()).collect())
        .collect();
    let counts = [32, 16, 10, 6];
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for (c, &n) in counts.iter().enumerate() {
        for _ in 0..n {
            images.push(patterns[c].iter().map(|p| p + 0.5 * gen.normal()).collect());
            labels.push(c as u32);
        }
    }
    (images, labels)
}

/// An augmented view: the image shifted by up to one pixel (zero fill), plus noise.
fn view(image: &[f32], gen: &mut Gen) -> Vec<f32> {
    let (dx, dy) = (gen.index(3) as isize - 1, gen.index(3) as isize - 1);
    let mut out = vec![0.0; image.len()];
    for c in 0..3 {
        for y in 0..SIZE as isize {
            for x in 0..SIZE as isize {
                let (sx, sy) = (x + dx, y + dy);
                if (0..SIZE as isize).contains(&sx) && (0..SIZE as isize).contains(&sy) {
                    out[c * SIZE * SIZE + (y as usize) * SIZE + x as usize] =
                        image[c * SIZE * SIZE + sy as usize * SIZE + sx as usize];
                }
            }
        }
    }
    out.iter().map(|v| v + 0.1 * gen.normal()).collect()
}

/// The `CROP x CROP` window at (x0, y0) of a `SIZE x SIZE` image.
fn crop(image: &[f32], x0: usize, y0: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(3 * CROP * CROP);
    for c in 0..3 {
        for y in y0..y0 + CROP {
            let row = c * SIZE * SIZE + y * SIZE;
            out.extend_from_slice(&image[row + x0..row + x0 + CROP]);
        }
    }
    out
}

fn upload<'a>(be: &CpuBackend<'a>, values: &[f32]) -> <CpuBackend<'a> as MemoryOps>::Buffer {
    let mut b = be.alloc(values.len()).unwrap();
    be.upload(&mut b, 0, values).unwrap();
    b
}

fn upload_labels<'a>(
    be: &CpuBackend<'a>,
    values: &[u32],
) -> <CpuBackend<'a> as MemoryOps>::IndexBuffer {
    let mut b = be.alloc_index(values.len()).unwrap();
    be.upload_index(&mut b, 0, values).unwrap();
    b
}

/// Mean cosine similarity of the query encoder's embeddings of the 64 clean images between
/// pairs of the same class, minus that between pairs of different classes.
fn class_separation<'a>(
    be: &CpuBackend<'a>,
    encoder: &Encoder,
    model: &mut DsclModel<CpuBackend<'a>>,
    images: &[Vec<f32>],
    labels: &[u32],
) -> f64 {
    let mut record = encoder.plan(be, IMAGES, SIZE, SIZE).unwrap();
    let mut scratch = Scratch::new(be, encoder.needs(be, &record)).unwrap();
    let x = upload(be, &images.concat());
    encoder
        .forward(
            be,
            &model.query.params,
            &mut model.query_state,
            &mut record,
            &x,
            &mut scratch,
        )
        .unwrap();
    let d = encoder.embedding_dim();
    let mut z = vec![0.0f32; IMAGES * d];
    be.download(record.embeddings(), 0, &mut z).unwrap();
    let (mut same, mut same_n, mut diff, mut diff_n) = (0.0, 0, 0.0, 0);
    for i in 0..IMAGES {
        for j in i + 1..IMAGES {
            let cos: f32 = (0..d).map(|e| z[i * d + e] * z[j * d + e]).sum();
            if labels[i] == labels[j] {
                same += cos as f64;
                same_n += 1;
            } else {
                diff += cos as f64;
                diff_n += 1;
            }
        }
    }
    same / same_n as f64 - diff / diff_n as f64
}

#[test]
fn dscl_step_drives_the_loss_down() {
    let be = CpuBackend::new();
    let (images, labels) = dataset();
    let encoder = Encoder::new(ResNetConfig::tiny(), 32).unwrap();
    let (batch, crops) = (16, 2);
    let config = DsclConfig {
        loss: ContrastiveLoss::Dscl { beta: 8.0 },
        temperature: 0.1,
        pbsd_weight: 1.5,
        crops,
        queue_len: 64,
        key_momentum: 0.99,
        sgd: SgdConfig::STAGE1,
        replicas: 1,
        crop_norm: CropNorm::PerSet,
    };
    let shape = StepShape {
        batch,
        image_size: SIZE,
        crop_size: CROP,
        num_classes: CLASSES as u32,
    };
    let mut step = DsclStep::new(&be, &encoder, config, shape).unwrap();
    let mut model = DsclModel::new(
        &be,
        &encoder,
        config.queue_len,
        &mut Xoshiro256PlusPlus::seed_from_u64(1),
    )
    .unwrap();
    let separation_before = class_separation(&be, &encoder, &mut model, &images, &labels);
    let mut gen = Gen::new(2);
    let mut epoch_losses = Vec::new();
    let epochs: usize = std::env::var("EPOCHS")
        .map(|v| v.parse().unwrap())
        .unwrap_or(40);
    let lr: f64 = std::env::var("LR")
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.5);
    let schedule = LrSchedule::WarmupCosine {
        lr,
        warmup_epochs: 2.0,
        epochs: epochs as f64,
    };
    let steps_per_epoch = IMAGES / batch;
    for epoch in 0..epochs {
        let mut order: Vec<usize> = (0..IMAGES).collect();
        for i in (1..IMAGES).rev() {
            order.swap(i, gen.index(i + 1));
        }
        let mut sum = 0.0;
        for (s, chunk) in order.chunks(batch).enumerate() {
            let lr = schedule.lr_at(epoch as f64 + s as f64 / steps_per_epoch as f64);
            let (mut q, mut k, mut c, mut boxes, mut y) = (
                Vec::new(),
                Vec::new(),
                vec![Vec::new(); crops],
                Vec::new(),
                Vec::new(),
            );
            for &i in chunk {
                q.extend(view(&images[i], &mut gen));
                k.extend(view(&images[i], &mut gen));
                y.push(labels[i]);
            }
            for (ci, crop_images) in c.iter_mut().enumerate() {
                for (bi, _) in chunk.iter().enumerate() {
                    let (x0, y0) = (gen.index(SIZE - CROP + 1), gen.index(SIZE - CROP + 1));
                    let query = &q[bi * 3 * SIZE * SIZE..(bi + 1) * 3 * SIZE * SIZE];
                    crop_images.extend(crop(query, x0, y0));
                    let _ = ci;
                    boxes.extend_from_slice(&[
                        bi as f32,
                        x0 as f32,
                        y0 as f32,
                        (x0 + CROP) as f32,
                        (y0 + CROP) as f32,
                    ]);
                }
            }
            let crops_flat: Vec<f32> = c.concat();
            let (qb, kb, cb, bb, yb) = (
                upload(&be, &q),
                upload(&be, &k),
                upload(&be, &crops_flat),
                upload(&be, &boxes),
                upload_labels(&be, &y),
            );
            let losses = step
                .step(
                    &be,
                    &encoder,
                    &mut model,
                    &DsclBatch {
                        queries: &qb,
                        keys: &kb,
                        crops: &cb,
                        crop_boxes: &bb,
                        labels: &yb,
                        key_shuffle: None,
                    },
                    lr,
                )
                .unwrap();
            assert!(losses.total.is_finite(), "{losses:?}");
            sum += losses.total;
            if std::env::var("SHOW").is_ok() {
                eprintln!("{losses:?}");
            }
        }
        epoch_losses.push(sum / (IMAGES / batch) as f64);
    }
    // Epoch 1 is the first with a full queue, so the contrast set has its final size. The
    // loss has a high floor here (a class with half the images has ~48 positives per anchor,
    // and PBSD's floor is the teachers' entropy), so the fall is checked against 5% (it is ~11% with these seeds), and the
    // embeddings must have learnt the classes.
    let (early, late) = (epoch_losses[1], *epoch_losses.last().unwrap());
    let separation_after = class_separation(&be, &encoder, &mut model, &images, &labels);
    eprintln!(
        "losses per epoch {epoch_losses:?}; class separation {separation_before:.3} -> {separation_after:.3}"
    );
    assert!(
        late < 0.9 * early,
        "loss did not fall by 10%: {epoch_losses:?}"
    );
    assert!(
        separation_after > separation_before + 0.2,
        "class separation {separation_before} -> {separation_after}"
    );
}

/// The cross-entropy baseline and stage 2 on the frozen baseline backbone both fit the set.
#[test]
fn classifier_steps_fit_the_images() {
    let be = CpuBackend::new();
    let (images, labels) = dataset();
    let model_def = ResNetClassifier::new(ResNetConfig::tiny(), CLASSES).unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let mut model = Trainable::initialised(&be, &model_def.params, &mut rng).unwrap();
    let mut state = TensorSet::initialised(&be, &model_def.state, &mut rng).unwrap();
    let mut step =
        ClassifierStep::new(&be, &model_def.backbone, &model_def.fc, IMAGES, SIZE).unwrap();
    let all: Vec<f32> = images.concat();
    let (x, y) = (upload(&be, &all), upload_labels(&be, &labels));
    let sgd = SgdConfig::STAGE1;
    let mut ce_once = |model: &mut Trainable<_>, state: &mut TensorSet<_>| {
        step.cross_entropy_step(
            &be,
            &model_def.backbone,
            &model_def.fc,
            model,
            state,
            &x,
            &y,
            &sgd,
            0.05,
        )
        .unwrap()
    };
    let first = ce_once(&mut model, &mut state);
    let mut last = first;
    for _ in 0..40 {
        last = ce_once(&mut model, &mut state);
    }
    assert!(last < 0.3 * first, "cross-entropy {first} -> {last}");

    // Stage 2: a fresh classifier on the trained (now frozen) backbone.
    let probe = LinearClassifier::new(model_def.backbone.feature_channels(), CLASSES).unwrap();
    let mut classifier = Trainable::initialised(&be, &probe.params, &mut rng).unwrap();
    let mut probe_step =
        ClassifierStep::new(&be, &model_def.backbone, &probe.fc, IMAGES, SIZE).unwrap();
    let frozen: Vec<Vec<f32>> = model.params.buffers().iter().map(|b| b.to_vec()).collect();
    let sgd2 = SgdConfig::STAGE2;
    let mut probe_once = |classifier: &mut Trainable<_>, state: &mut TensorSet<_>| {
        probe_step
            .linear_probe_step(
                &be,
                &model_def.backbone,
                &model.params,
                state,
                &probe.fc,
                classifier,
                &x,
                &y,
                &sgd2,
                0.5,
            )
            .unwrap()
    };
    let first = probe_once(&mut classifier, &mut state);
    let mut last = first;
    for _ in 0..40 {
        last = probe_once(&mut classifier, &mut state);
    }
    assert!(last < 0.5 * first, "linear probe {first} -> {last}");
    let after: Vec<Vec<f32>> = model.params.buffers().iter().map(|b| b.to_vec()).collect();
    assert_eq!(frozen, after, "stage 2 changed the backbone");
}

/// The CPU backend, counting the reads of device memory a caller waits for: `download`,
/// `download_index`, `take_fault` and `download_with_fault` (one each). On a GPU each is a
/// round trip that drains the queue.
struct CountingReads {
    inner: CpuBackend<'static>,
    reads: Cell<usize>,
}

impl CountingReads {
    fn new() -> Self {
        CountingReads {
            inner: CpuBackend::new(),
            reads: Cell::new(0),
        }
    }
    fn read(&self) {
        self.reads.set(self.reads.get() + 1);
    }
    /// Reads `f` makes.
    fn reads_of<T>(&self, f: impl FnOnce() -> T) -> (usize, T) {
        let before = self.reads.get();
        let out = f();
        (self.reads.get() - before, out)
    }
}

impl MemoryOps for CountingReads {
    type Elem = f32;

    type Buffer = <CpuBackend<'static> as MemoryOps>::Buffer;

    type IndexBuffer = <CpuBackend<'static> as MemoryOps>::IndexBuffer;

    fn device_name(&self) -> &str {
        self.inner.device_name()
    }

    fn alloc(&self, len: usize) -> Result<Self::Buffer> {
        self.inner.alloc(len)
    }

    fn alloc_index(&self, len: usize) -> Result<Self::IndexBuffer> {
        self.inner.alloc_index(len)
    }

    fn upload(&self, dst: &mut Self::Buffer, offset: usize, src: &[Self::Elem]) -> Result<()> {
        self.inner.upload(dst, offset, src)
    }

    fn download(&self, src: &Self::Buffer, offset: usize, dst: &mut [Self::Elem]) -> Result<()> {
        self.read();
        self.inner.download(src, offset, dst)
    }

    fn upload_index(&self, dst: &mut Self::IndexBuffer, offset: usize, src: &[u32]) -> Result<()> {
        self.inner.upload_index(dst, offset, src)
    }

    fn download_index(
        &self,
        src: &Self::IndexBuffer,
        offset: usize,
        dst: &mut [u32],
    ) -> Result<()> {
        self.read();
        self.inner.download_index(src, offset, dst)
    }

    fn take_fault(&self) -> Result<Option<Fault>> {
        self.read();
        self.inner.take_fault()
    }

    fn download_with_fault(
        &self,
        src: &Self::Buffer,
        offset: usize,
        dst: &mut [f32],
    ) -> Result<Option<Fault>> {
        self.read();
        self.inner.download_with_fault(src, offset, dst)
    }
}

impl ElementwiseOps for CountingReads {
    fn fill(&self, x: &mut Self::Buffer, offset: usize, len: usize, value: f64) -> Result<()> {
        self.inner.fill(x, offset, len, value)
    }

    fn copy(
        &self,
        src: &Self::Buffer,
        src_offset: usize,
        dst: &mut Self::Buffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        self.inner.copy(src, src_offset, dst, dst_offset, len)
    }

    fn copy_index(
        &self,
        src: &Self::IndexBuffer,
        src_offset: usize,
        dst: &mut Self::IndexBuffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        self.inner.copy_index(src, src_offset, dst, dst_offset, len)
    }

    fn scale(&self, x: &mut Self::Buffer, len: usize, alpha: f64) -> Result<()> {
        self.inner.scale(x, len, alpha)
    }

    fn axpy(&self, alpha: f64, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        self.inner.axpy(alpha, x, y, len)
    }

    fn add(
        &self,
        a: &Self::Buffer,
        b: &Self::Buffer,
        out: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        self.inner.add(a, b, out, len)
    }

    fn sum(
        &self,
        x: &Self::Buffer,
        len: usize,
        scale: f64,
        out: &mut Self::Buffer,
        offset: usize,
    ) -> Result<()> {
        self.inner.sum(x, len, scale, out, offset)
    }

    fn relu_forward(&self, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        self.inner.relu_forward(x, y, len)
    }

    fn relu_backward(
        &self,
        y: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        self.inner.relu_backward(y, grad_y, grad_x, len)
    }
}

impl DenseOps for CountingReads {
    fn gemm(
        &self,
        desc: &GemmDesc,
        a: &Self::Buffer,
        b: &Self::Buffer,
        c: &mut Self::Buffer,
    ) -> Result<()> {
        self.inner.gemm(desc, a, b, c)
    }

    fn bias_add(
        &self,
        x: &mut Self::Buffer,
        bias: &Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        self.inner.bias_add(x, bias, rows, cols)
    }

    fn bias_backward(
        &self,
        grad_out: &Self::Buffer,
        grad_bias: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        self.inner.bias_backward(grad_out, grad_bias, rows, cols)
    }
}

impl ConvOps for CountingReads {
    fn conv2d_workspace_len(&self, shape: &Conv2dShape) -> usize {
        self.inner.conv2d_workspace_len(shape)
    }

    fn conv2d_forward(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        weight: &Self::Buffer,
        output: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        self.inner
            .conv2d_forward(shape, input, weight, output, workspace)
    }

    fn conv2d_backward_data(
        &self,
        shape: &Conv2dShape,
        grad_output: &Self::Buffer,
        weight: &Self::Buffer,
        grad_input: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        self.inner
            .conv2d_backward_data(shape, grad_output, weight, grad_input, workspace)
    }

    fn conv2d_backward_filter(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        grad_output: &Self::Buffer,
        grad_weight: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        self.inner
            .conv2d_backward_filter(shape, input, grad_output, grad_weight, workspace)
    }
}

impl BatchNormOps for CountingReads {
    fn batch_norm_forward_train(
        &self,
        shape: &BatchNormShape,
        io: BnTrainBuffers<'_, Self>,
    ) -> Result<()> {
        self.inner.batch_norm_forward_train(shape, io)
    }

    fn batch_norm_forward_inference(
        &self,
        shape: &BatchNormShape,
        io: BnInferenceBuffers<'_, Self>,
    ) -> Result<()> {
        self.inner.batch_norm_forward_inference(shape, io)
    }

    fn batch_norm_backward(
        &self,
        shape: &BatchNormShape,
        io: BnBackwardBuffers<'_, Self>,
    ) -> Result<()> {
        self.inner.batch_norm_backward(shape, io)
    }
}

impl PoolOps for CountingReads {
    fn max_pool2d_forward(
        &self,
        shape: &PoolShape,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        argmax: &mut Self::IndexBuffer,
    ) -> Result<()> {
        self.inner.max_pool2d_forward(shape, x, y, argmax)
    }

    fn max_pool2d_backward(
        &self,
        shape: &PoolShape,
        grad_y: &Self::Buffer,
        argmax: &Self::IndexBuffer,
        grad_x: &mut Self::Buffer,
    ) -> Result<()> {
        self.inner
            .max_pool2d_backward(shape, grad_y, argmax, grad_x)
    }

    fn global_avg_pool_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        self.inner
            .global_avg_pool_forward(x, y, batch, channels, spatial)
    }

    fn global_avg_pool_backward(
        &self,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        self.inner
            .global_avg_pool_backward(grad_y, grad_x, batch, channels, spatial)
    }
}

impl RoiAlignOps for CountingReads {
    fn roi_align_forward(
        &self,
        shape: &RoiAlignShape,
        features: &Self::Buffer,
        boxes: &Self::Buffer,
        output: &mut Self::Buffer,
    ) -> Result<()> {
        self.inner.roi_align_forward(shape, features, boxes, output)
    }

    fn roi_align_backward(
        &self,
        shape: &RoiAlignShape,
        grad_output: &Self::Buffer,
        boxes: &Self::Buffer,
        grad_features: &mut Self::Buffer,
    ) -> Result<()> {
        self.inner
            .roi_align_backward(shape, grad_output, boxes, grad_features)
    }
}

impl RowOps for CountingReads {
    fn l2_normalize_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        norms: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        self.inner.l2_normalize_forward(x, y, norms, rows, cols)
    }

    fn l2_normalize_backward(
        &self,
        y: &Self::Buffer,
        norms: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        self.inner
            .l2_normalize_backward(y, norms, grad_y, grad_x, rows, cols)
    }

    fn row_softmax(&self, desc: &RowsDesc, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<()> {
        self.inner.row_softmax(desc, x, y)
    }

    fn row_logsumexp(
        &self,
        desc: &RowsDesc,
        x: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        self.inner.row_logsumexp(desc, x, out)
    }

    fn contrastive_rows(
        &self,
        desc: &ContrastiveRowsDesc,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        self.inner.contrastive_rows(desc, logits, labels, loss)
    }

    fn soft_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        targets: &Self::Buffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        self.inner
            .soft_cross_entropy(desc, grad_scale, logits, targets, loss)
    }

    fn softmax_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        self.inner
            .softmax_cross_entropy(desc, grad_scale, logits, labels, loss)
    }
}

impl OptimOps for CountingReads {
    fn sgd_momentum_update(
        &self,
        params: &SgdParams,
        weights: &mut Self::Buffer,
        grads: &Self::Buffer,
        velocity: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        self.inner
            .sgd_momentum_update(params, weights, grads, velocity, len)
    }

    fn ema_update(
        &self,
        momentum: f64,
        source: &Self::Buffer,
        target: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        self.inner.ema_update(momentum, source, target, len)
    }
}

fn upload_to<B: Backend<Elem = f32>>(be: &B, values: &[f32]) -> B::Buffer {
    let mut b = be.alloc(values.len()).unwrap();
    be.upload(&mut b, 0, values).unwrap();
    b
}

fn upload_labels_to<B: Backend>(be: &B, values: &[u32]) -> B::IndexBuffer {
    let mut b = be.alloc_index(values.len()).unwrap();
    be.upload_index(&mut b, 0, values).unwrap();
    b
}

/// A stage-1 batch of the first `batch` images, `crops` crops each: query views, key views,
/// crops (crop-major), crop boxes, labels.
fn stage1_batch(batch: usize, crops: usize, seed: u64) -> [Vec<f32>; 4] {
    let (images, _) = dataset();
    let mut gen = Gen::new(seed);
    let (mut q, mut k, mut c, mut boxes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for image in &images[..batch] {
        q.extend(view(image, &mut gen));
        k.extend(view(image, &mut gen));
    }
    for _ in 0..crops {
        for bi in 0..batch {
            let (x0, y0) = (gen.index(SIZE - CROP + 1), gen.index(SIZE - CROP + 1));
            c.extend(crop(
                &q[bi * 3 * SIZE * SIZE..(bi + 1) * 3 * SIZE * SIZE],
                x0,
                y0,
            ));
            boxes.extend_from_slice(&[
                bi as f32,
                x0 as f32,
                y0 as f32,
                (x0 + CROP) as f32,
                (y0 + CROP) as f32,
            ]);
        }
    }
    [q, k, c, boxes]
}

/// One stage-1 step (PBSD on or off), one cross-entropy step and one linear-probe step each
/// read the device exactly once: the losses, their gradient probes and the fault slot come
/// back together after backward is queued. (Before, the stage-1 step read four times: each
/// loss downloaded its totals, then took the fault slot; the classifier steps twice.)
#[test]
fn each_step_reads_the_device_once() {
    let be = CountingReads::new();
    let (_, labels) = dataset();
    let encoder = Encoder::new(ResNetConfig::tiny(), 16).unwrap();
    let (batch, crops) = (8, 2);
    let [q, k, c, boxes] = stage1_batch(batch, crops, 5);
    let (qb, kb, cb, bb, yb) = (
        upload_to(&be, &q),
        upload_to(&be, &k),
        upload_to(&be, &c),
        upload_to(&be, &boxes),
        upload_labels_to(&be, &labels[..batch]),
    );
    let dscl_batch = DsclBatch {
        queries: &qb,
        keys: &kb,
        crops: &cb,
        crop_boxes: &bb,
        labels: &yb,
        key_shuffle: None,
    };
    for pbsd_weight in [1.5, 0.0] {
        let config = DsclConfig {
            pbsd_weight,
            crops,
            queue_len: 32,
            ..DsclConfig::default()
        };
        let shape = StepShape {
            batch,
            image_size: SIZE,
            crop_size: CROP,
            num_classes: CLASSES as u32,
        };
        let mut step = DsclStep::new(&be, &encoder, config, shape).unwrap();
        let mut model = DsclModel::new(
            &be,
            &encoder,
            config.queue_len,
            &mut Xoshiro256PlusPlus::seed_from_u64(1),
        )
        .unwrap();
        // The second step has a queue to contrast with.
        for n in 0..2 {
            let (reads, losses) = be.reads_of(|| {
                step.step(&be, &encoder, &mut model, &dscl_batch, 0.1)
                    .unwrap()
            });
            assert!(losses.total.is_finite(), "{losses:?}");
            assert_eq!(
                reads, 1,
                "stage-1 step {n} (pbsd weight {pbsd_weight}) read the device {reads} times"
            );
        }
        let (reads, _) = be.reads_of(|| {
            step.forward_backward(&be, &encoder, &mut model, &dscl_batch)
                .unwrap()
        });
        assert_eq!(reads, 1, "DsclStep::forward_backward read {reads} times");
    }

    let model_def = ResNetClassifier::new(ResNetConfig::tiny(), CLASSES).unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let mut model = Trainable::initialised(&be, &model_def.params, &mut rng).unwrap();
    let mut state = TensorSet::initialised(&be, &model_def.state, &mut rng).unwrap();
    let mut step =
        ClassifierStep::new(&be, &model_def.backbone, &model_def.fc, batch, SIZE).unwrap();
    let (reads, loss) = be.reads_of(|| {
        step.cross_entropy_step(
            &be,
            &model_def.backbone,
            &model_def.fc,
            &mut model,
            &mut state,
            &qb,
            &yb,
            &SgdConfig::STAGE1,
            0.05,
        )
        .unwrap()
    });
    assert!(loss.is_finite());
    assert_eq!(reads, 1, "cross-entropy step read the device {reads} times");
    let probe = LinearClassifier::new(model_def.backbone.feature_channels(), CLASSES).unwrap();
    let mut classifier = Trainable::initialised(&be, &probe.params, &mut rng).unwrap();
    let (reads, loss) = be.reads_of(|| {
        step.linear_probe_step(
            &be,
            &model_def.backbone,
            &model.params,
            &mut state,
            &probe.fc,
            &mut classifier,
            &qb,
            &yb,
            &SgdConfig::STAGE2,
            0.5,
        )
        .unwrap()
    });
    assert!(loss.is_finite());
    assert_eq!(reads, 1, "linear-probe step read the device {reads} times");
}

/// A step whose losses fault still names the cause (the one read takes the fault after the
/// whole backward is queued) and stops before SGD: no query parameter, velocity or queue entry
/// changes.
#[test]
fn a_faulty_step_names_the_cause_and_changes_no_parameter() {
    faulty_step(1, None);
    // Two replica groups, each loss over its own rows: the cause is still named over the whole
    // batch, and nothing changes.
    faulty_step(2, Some(&[6, 1, 4, 0, 3, 7, 2, 5]));
}

fn faulty_step(replicas: usize, key_shuffle: Option<&[u32]>) {
    let be = CpuBackend::new();
    let (_, labels) = dataset();
    let encoder = Encoder::new(ResNetConfig::tiny(), 16).unwrap();
    let (batch, crops) = (8, 2);
    let config = DsclConfig {
        crops,
        queue_len: 32,
        replicas,
        ..DsclConfig::default()
    };
    let shape = StepShape {
        batch,
        image_size: SIZE,
        crop_size: CROP,
        num_classes: CLASSES as u32,
    };
    let mut step = DsclStep::new(&be, &encoder, config, shape).unwrap();
    let mut model = DsclModel::new(
        &be,
        &encoder,
        config.queue_len,
        &mut Xoshiro256PlusPlus::seed_from_u64(1),
    )
    .unwrap();
    let [q, k, c, boxes] = stage1_batch(batch, crops, 6);
    let (kb, cb, bb) = (upload(&be, &k), upload(&be, &c), upload(&be, &boxes));
    let mut bad_labels = labels[..batch].to_vec();
    bad_labels[3] = 7;
    let mut nan_queries = q.clone();
    nan_queries[2 * 3 * SIZE * SIZE + 5] = f32::NAN;
    let snapshot = |m: &DsclModel<CpuBackend<'static>>| {
        let sets = [&m.query.params, &m.query.velocity];
        let mut all: Vec<Vec<f32>> = sets
            .iter()
            .flat_map(|t| t.buffers().iter().map(|b| b.to_vec()))
            .collect();
        all.push(m.queue.keys.to_vec());
        all.push(m.queue.labels.iter().map(|&l| l as f32).collect());
        (all, m.queue.filled())
    };
    // One good step first, so the queue and the velocity hold something.
    let (qb, yb) = (upload(&be, &q), upload_labels(&be, &labels[..batch]));
    let batch_of = |qb, yb| DsclBatch {
        queries: qb,
        keys: &kb,
        crops: &cb,
        crop_boxes: &bb,
        labels: yb,
        key_shuffle,
    };
    step.step(&be, &encoder, &mut model, &batch_of(&qb, &yb), 0.1)
        .unwrap();
    let before = snapshot(&model);

    let bad = upload_labels(&be, &bad_labels);
    let err = step
        .step(&be, &encoder, &mut model, &batch_of(&qb, &bad), 0.1)
        .unwrap_err();
    assert_eq!(
        err,
        Error::LabelOutOfRange {
            what: "labels",
            index: 3,
            label: 7,
            num_classes: CLASSES as u32,
        }
    );
    assert!(
        snapshot(&model) == before,
        "a step with a bad label changed the model"
    );

    let nan = upload(&be, &nan_queries);
    let err = step
        .step(&be, &encoder, &mut model, &batch_of(&nan, &yb), 0.1)
        .unwrap_err();
    // Batch norm spreads the NaN over the batch, whose embeddings the normalisation zeroes
    // (recording the fault), so no loss input holds it: the fault goes to the first loss, as
    // when each loss read the slot after itself.
    assert!(
        matches!(
            err,
            Error::NonFinite {
                what: "dscl loss",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        snapshot(&model) == before,
        "a step with a NaN image changed the model"
    );

    // The fault was taken with the read: the next good step runs.
    let losses = step
        .step(&be, &encoder, &mut model, &batch_of(&qb, &yb), 0.1)
        .unwrap();
    assert!(losses.total.is_finite(), "{losses:?}");
}
