//! One loss step on the CPU backend: DSCL (gradient through the contrast set, tau 0.07,
//! beta 8, full queue) + PBSD (C = 5 crops), forward and backward, B = 256, d = 128, at
//! K = 8192 and K = 65536. Inputs, loss plans and gradients are allocated once, outside the
//! timed loop. Threads: rayon's global pool (`RAYON_NUM_THREADS`, default all cores).
//!
//! `cargo bench -p dscl-benches --bench loss`; `compare/run_loss_comparison.sh` puts the
//! figures next to PyTorch's.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use dscl_benches::loss::{LossStep, StepConfig};
use dscl_core::backend::prelude::*;
use dscl_cpu::CpuBackend;

fn loss_step(c: &mut Criterion) {
    let backend = CpuBackend::new();
    eprintln!("backend: {}", backend.device_name());
    let mut group = c.benchmark_group("dscl_pbsd_step");
    // Steps take 0.1 s to seconds: few samples, one iteration each.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    for queue_len in [8192usize, 65536] {
        let mut step =
            LossStep::new(&backend, StepConfig::paper(queue_len)).expect("set up the loss step");
        // GEMM work of the step, as "elements": criterion then prints GFLOP/s as Gelem/s.
        group.throughput(Throughput::Elements(step.cfg.gemm_flops() as u64));
        group.measurement_time(Duration::from_secs(if queue_len > 16384 { 15 } else { 5 }));
        group.bench_function(format!("K={queue_len}"), |b| {
            b.iter(|| black_box(step.run(&backend).expect("loss step")))
        });
    }
    group.finish();
}

criterion_group!(benches, loss_step);
criterion_main!(benches);
