//! The all-reduce share of a data-parallel ResNet-50 step on the CPU backend: each rank runs
//! the cross-entropy step of its 16 images at 224 px (1000 classes) across the job, which
//! all-reduces the step's 25.6 M gradients through MPI, and then that all-reduce alone.
//!
//! ```text
//! cargo build --release -p dscl-runtime --features mpi --example allreduce_share
//! mpirun -np 2 target/release/examples/allreduce_share [STEPS]
//! ```
//!
//! Rank 0 prints the machine, the job, the median step and all-reduce times and the share.

use std::time::Instant;

use anyhow::Result;
use dscl_core::backend::prelude::*;
use dscl_core::collective::Collective;
use dscl_core::nn::TensorSet;
use dscl_core::nn::{ResNetClassifier, ResNetConfig};
use dscl_core::train::{ClassifierStep, SgdConfig, Trainable};
use dscl_cpu::CpuBackend;
use dscl_runtime::cluster::Cluster;
use rand::rngs::Xoshiro256PlusPlus;
use rand::SeedableRng;

const PER_RANK: usize = 16;
const IMAGE: usize = 224;
const CLASSES: usize = 1000;

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn main() -> Result<()> {
    let steps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3);
    let cluster = Cluster::join(true)?;
    let placement = cluster.placement();
    let exchange = cluster.exchange();
    let backend = CpuBackend::new();
    let net = ResNetClassifier::new(ResNetConfig::resnet50(), CLASSES)?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let mut model = Trainable::initialised(&backend, &net.params, &mut rng)?;
    let mut state = TensorSet::zeros(&backend, &net.state)?;
    let batch = PER_RANK * placement.world;
    let mut step =
        ClassifierStep::placed(&backend, &net.backbone, &net.fc, batch, IMAGE, placement)?;
    let mut images = backend.alloc(PER_RANK * 3 * IMAGE * IMAGE)?;
    let pixels: Vec<f32> = (0..PER_RANK * 3 * IMAGE * IMAGE)
        .map(|i| ((i * 7919 + placement.rank) % 255) as f32 / 255.0 - 0.5)
        .collect();
    backend.upload(&mut images, 0, &pixels)?;
    let mut labels = backend.alloc_index(PER_RANK)?;
    let classes: Vec<u32> = (0..PER_RANK)
        .map(|i| ((i * 37 + placement.rank) % CLASSES) as u32)
        .collect();
    backend.upload_index(&mut labels, 0, &classes)?;
    let gradients: usize = model.grads.buffers().iter().map(|b| b.len()).sum();

    let (mut step_s, mut reduce_s) = (Vec::new(), Vec::new());
    for i in 0..=steps {
        Collective::<CpuBackend>::barrier(&exchange)?;
        let t = Instant::now();
        step.cross_entropy_step_across(
            &backend,
            &exchange,
            &net.backbone,
            &net.fc,
            &mut model,
            &mut state,
            &images,
            &labels,
            &SgdConfig::STAGE1,
            0.01,
        )?;
        let step_time = t.elapsed().as_secs_f64();
        Collective::<CpuBackend>::barrier(&exchange)?;
        let t = Instant::now();
        exchange.all_reduce_sum(&backend, model.grads.buffers_mut())?;
        let reduce_time = t.elapsed().as_secs_f64();
        // The first of each is a warm-up.
        if i > 0 {
            step_s.push(step_time);
            reduce_s.push(reduce_time);
        }
    }
    if cluster.writes() {
        let (step_t, reduce_t) = (median(step_s), median(reduce_s));
        let bytes = 4.0 * gradients as f64;
        let world = placement.world as f64;
        println!(
            "{} ({} threads per rank), {} ranks, ResNet-50 {PER_RANK} images of {IMAGE} px per rank",
            cpu_model(),
            rayon::current_num_threads(),
            placement.world
        );
        println!(
            "step (with its all-reduce) {:.3} s, all-reduce of {gradients} gradients {:.1} ms \
             ({:.2} GB/s ring-equivalent bus bandwidth), share {:.1} %",
            step_t,
            reduce_t * 1e3,
            2.0 * (world - 1.0) / world * bytes / reduce_t / 1e9,
            100.0 * reduce_t / step_t
        );
    }
    Ok(())
}
