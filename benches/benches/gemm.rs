//! GEMM throughput of the CPU and wgpu backends on square sizes and on the DSCL loss shapes
//! (B = 256 anchors, N = 2B + K = 66048 contrast rows, d = 128).
//!
//! `cargo bench -p dscl-benches --bench gemm`; throughput is reported in elements/s where one
//! element is one flop, so "Gelem/s" reads as GFLOP/s. `DSCL_BENCH_THREADS=1` pins the CPU
//! thread count (default: all cores). Compare with `benches/compare/gemm_numpy.py`. The wgpu
//! group runs on the default adapter (it is skipped, with a note, when there is none); each
//! timed product waits for the device.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dscl_core::backend::prelude::*;
use dscl_core::desc::GemmDesc;
use dscl_cpu::CpuBackend;
use dscl_wgpu::WgpuBackend;
use std::time::Duration;

fn backend() -> CpuBackend<'static> {
    match std::env::var("DSCL_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
    {
        Some(t) => CpuBackend::with_threads(t).expect("thread pool"),
        None => CpuBackend::new(),
    }
}

/// (name, m, n, k, trans_a, trans_b)
const SHAPES: &[(&str, usize, usize, usize, bool, bool)] = &[
    ("square_256", 256, 256, 256, false, false),
    ("square_512", 512, 512, 512, false, false),
    ("square_1024", 1024, 1024, 1024, false, false),
    // logits = Q Z^T with Z stored as contrast rows (the forward of the loss)
    ("loss_256x66048x128_nt", 256, 66048, 128, false, true),
    // the same product with Z^T already stored [128, 66048]
    ("loss_256x66048x128_nn", 256, 66048, 128, false, false),
    // dQ = G Z (backward of the loss into the queries)
    ("loss_256x128x66048_nn", 256, 128, 66048, false, false),
    // dZ = G^T Q (backward into the contrast set)
    ("loss_66048x128x256_tn", 66048, 128, 256, true, false),
];

fn fill<B: Backend<Elem = f32>>(be: &B, len: usize, seed: u32) -> B::Buffer {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    let host: Vec<f32> = (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    let mut b = be.alloc(len).expect("alloc");
    be.upload(&mut b, 0, &host).expect("upload");
    b
}

/// Times every shape on `be`; `wait` runs after each product so a device's time counts.
fn bench_shapes<B: Backend<Elem = f32>>(
    c: &mut Criterion,
    group_name: String,
    be: &B,
    wait: impl Fn(&B),
) {
    let mut group = c.benchmark_group(group_name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for &(name, m, n, k, ta, tb) in SHAPES {
        let desc = GemmDesc::new(m, n, k, ta, tb);
        let a = fill(be, m * k, 1);
        let b = fill(be, k * n, 2);
        let mut out = be.alloc(m * n).expect("alloc");
        group.throughput(Throughput::Elements(desc.flops() as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| {
                be.gemm(&desc, &a, &b, &mut out).expect("gemm");
                wait(be)
            })
        });
    }
    group.finish();
}

fn gemm(c: &mut Criterion) {
    let be = backend();
    bench_shapes(c, format!("gemm_{}t", be.threads()), &be, |_| {});
}

fn gemm_wgpu(c: &mut Criterion) {
    let be = match WgpuBackend::new() {
        Ok(be) => be,
        Err(e) => {
            eprintln!("gemm_wgpu skipped: {e}");
            return;
        }
    };
    eprintln!("gemm_wgpu on {}", be.device_name());
    bench_shapes(c, "gemm_wgpu".into(), &be, |be| {
        be.synchronize().expect("device")
    });
}

criterion_group!(benches, gemm, gemm_wgpu);
criterion_main!(benches);
