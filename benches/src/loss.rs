//! One loss step at the paper's shapes: DSCL (`QueryGradient::ThroughContrastSet`, full queue)
//! then PBSD over C crops, forward and backward, every buffer allocated once.
//!
//! The problem: B queries, B keys, a full queue of K rows, C x B teachers and C x B students,
//! all rows drawn from a standard normal and L2-normalised (uniform on the unit sphere); labels
//! of queries and queue drawn i.i.d. from a long-tailed distribution over `num_classes` classes,
//! `p_c ∝ imbalance^(-c / (num_classes - 1))` (ImageNet-LT's 1280-to-5 profile for 1000 classes
//! and imbalance 256).

use dscl_core::loss::host::{DeviceProblem, HostProblem};
use dscl_core::loss::{
    ContrastiveShape, PatchSelfDistillation, PositiveWeighting, QueryGradient,
    SupervisedContrastive, DEFAULT_BETA, DEFAULT_CROPS, DEFAULT_MAX_BLOCK_ELEMS,
    DEFAULT_TEMPERATURE,
};
use dscl_core::{Backend, Result};

/// The shapes and constants of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepConfig {
    pub batch: usize,
    pub dim: usize,
    pub queue_len: usize,
    pub crops: usize,
    pub num_classes: u32,
    /// Ratio of the most to the least frequent class.
    pub imbalance: f64,
    pub temperature: f64,
    pub beta: f64,
    pub seed: u64,
}

impl StepConfig {
    /// The paper's ImageNet-LT step (B = 256, d = 128, C = 5, tau = 0.07, beta = 8, 1000
    /// classes) with queue length `queue_len`.
    pub fn paper(queue_len: usize) -> Self {
        StepConfig {
            batch: 256,
            dim: 128,
            queue_len,
            crops: DEFAULT_CROPS,
            num_classes: 1000,
            imbalance: 256.0,
            temperature: DEFAULT_TEMPERATURE,
            beta: DEFAULT_BETA,
            seed: 0x5eed_d5c1,
        }
    }

    pub fn shape(&self) -> ContrastiveShape {
        ContrastiveShape {
            batch: self.batch,
            dim: self.dim,
            queue_len: self.queue_len,
            num_classes: self.num_classes,
        }
    }

    /// Multiply-adds of the step's matrix products, times two: the GEMM work both
    /// implementations must do (DSCL: logits, `G Z`, `G[:, ..B]^T Q`; PBSD per crop: teacher
    /// and student profiles and the student gradient).
    pub fn gemm_flops(&self) -> f64 {
        let (b, d, k, c) = (
            self.batch as f64,
            self.dim as f64,
            self.queue_len as f64,
            self.crops as f64,
        );
        let n = 2.0 * b + k;
        let dscl = 2.0 * b * n * d * 2.0 + 2.0 * b * b * d;
        let pbsd = c * 3.0 * 2.0 * b * (1.0 + k) * d;
        dscl + pbsd
    }
}

/// SplitMix64: small, seeded, and good enough for benchmark inputs.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * core::f64::consts::PI * u2).cos()
    }
}

/// `rows` random unit rows of `dim` elements, row-major.
pub fn unit_rows(rng: &mut Rng, rows: usize, dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * dim);
    let mut row = vec![0.0f64; dim];
    for _ in 0..rows {
        row.iter_mut().for_each(|x| *x = rng.normal());
        let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        out.extend(row.iter().map(|x| (x / norm) as f32));
    }
    out
}

/// `count` labels drawn i.i.d. with `p_c ∝ imbalance^(-c / (classes - 1))`.
pub fn long_tailed_labels(rng: &mut Rng, count: usize, classes: u32, imbalance: f64) -> Vec<u32> {
    let last = (classes.max(2) - 1) as f64;
    let mut cdf = Vec::with_capacity(classes as usize);
    let mut total = 0.0;
    for c in 0..classes {
        total += imbalance.powf(-(c as f64) / last);
        cdf.push(total);
    }
    (0..count)
        .map(|_| {
            let u = rng.uniform() * total;
            (cdf.partition_point(|&x| x <= u) as u32).min(classes - 1)
        })
        .collect()
}

/// The host data of one step, in f32 (half the host memory of f64 at the paper's shapes; the
/// peak-memory comparison counts it).
pub type HostData = HostProblem<f32>;

/// The step's inputs on the device.
pub type StepInputs<B> = DeviceProblem<B>;

/// Draws the step's inputs from `cfg.seed`: unit rows and long-tailed labels, a full queue.
pub fn generate(cfg: &StepConfig) -> HostData {
    let mut rng = Rng::new(cfg.seed);
    let (b, d) = (cfg.batch, cfg.dim);
    HostProblem {
        shape: cfg.shape(),
        queue_filled: cfg.queue_len,
        crops: cfg.crops,
        queries: unit_rows(&mut rng, b, d),
        keys: unit_rows(&mut rng, b, d),
        queue: unit_rows(&mut rng, cfg.queue_len, d),
        labels: long_tailed_labels(&mut rng, b, cfg.num_classes, cfg.imbalance),
        queue_labels: long_tailed_labels(&mut rng, cfg.queue_len, cfg.num_classes, cfg.imbalance),
        teachers: unit_rows(&mut rng, cfg.crops * b, d),
        students: unit_rows(&mut rng, cfg.crops * b, d),
    }
}

/// The loss plans (with their scratch) and the gradient outputs.
pub struct StepPlans<B: Backend> {
    pub dscl: SupervisedContrastive<B>,
    pub pbsd: PatchSelfDistillation<B>,
    pub grad_queries: B::Buffer,
    pub grad_students: B::Buffer,
}

impl<B: Backend> StepPlans<B> {
    /// The plans with the losses' default logits block (`DEFAULT_MAX_BLOCK_ELEMS`).
    pub fn new(backend: &B, cfg: &StepConfig) -> Result<Self> {
        Self::with_max_block_elems(backend, cfg, DEFAULT_MAX_BLOCK_ELEMS)
    }

    /// The plans with each logits block bounded by `max_block_elems` elements.
    pub fn with_max_block_elems(
        backend: &B,
        cfg: &StepConfig,
        max_block_elems: usize,
    ) -> Result<Self> {
        let shape = cfg.shape();
        Ok(StepPlans {
            dscl: SupervisedContrastive::new(
                backend,
                shape,
                PositiveWeighting::Decoupled { beta: cfg.beta },
                cfg.temperature,
                max_block_elems,
            )?,
            pbsd: PatchSelfDistillation::with_max_block_elems(
                backend,
                shape,
                cfg.crops,
                cfg.temperature,
                max_block_elems,
            )?,
            grad_queries: backend.alloc(cfg.batch * cfg.dim)?,
            grad_students: backend.alloc(cfg.crops * cfg.batch * cfg.dim)?,
        })
    }

    /// DSCL forward + backward: the loss, `dL/dQ` in `grad_queries`.
    pub fn dscl(&mut self, backend: &B, x: &StepInputs<B>) -> Result<f64> {
        self.dscl.forward_backward(
            backend,
            &x.contrastive_inputs(),
            QueryGradient::ThroughContrastSet,
            &mut self.grad_queries,
        )
    }

    /// PBSD forward + backward: the loss, `dL/dstudents` in `grad_students`.
    pub fn pbsd(&mut self, backend: &B, x: &StepInputs<B>) -> Result<f64> {
        self.pbsd
            .forward_backward(backend, &x.pbsd_inputs(), &mut self.grad_students)
    }

    /// One step: (DSCL loss, PBSD loss).
    pub fn step(&mut self, backend: &B, x: &StepInputs<B>) -> Result<(f64, f64)> {
        Ok((self.dscl(backend, x)?, self.pbsd(backend, x)?))
    }
}

/// Everything one step needs, allocated once.
pub struct LossStep<B: Backend> {
    pub cfg: StepConfig,
    pub inputs: StepInputs<B>,
    pub plans: StepPlans<B>,
}

impl<B: Backend> LossStep<B> {
    pub fn new(backend: &B, cfg: StepConfig) -> Result<Self> {
        let inputs = generate(&cfg).upload(backend)?;
        let plans = StepPlans::new(backend, &cfg)?;
        Ok(LossStep { cfg, inputs, plans })
    }

    /// One step: (DSCL loss, PBSD loss).
    pub fn run(&mut self, backend: &B) -> Result<(f64, f64)> {
        self.plans.step(backend, &self.inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_long_tailed_and_in_range() {
        let mut rng = Rng::new(1);
        let labels = long_tailed_labels(&mut rng, 100_000, 1000, 256.0);
        assert!(labels.iter().all(|&l| l < 1000));
        let head = labels.iter().filter(|&&l| l < 100).count();
        let tail = labels.iter().filter(|&&l| l >= 900).count();
        assert!(head > 20 * tail, "head {head} tail {tail}");
    }

    #[test]
    fn rows_are_unit_length() {
        let mut rng = Rng::new(2);
        let rows = unit_rows(&mut rng, 10, 128);
        for row in rows.chunks(128) {
            let n: f32 = row.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-5);
        }
    }
}
