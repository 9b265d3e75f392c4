//! The DSCL + PBSD loss step alone (forward and backward, the paper's shapes: B = 256, d = 128,
//! C = 5, a full queue of K) on one backend, in milliseconds per step: one warm-up step, then
//! the mean, minimum and median of `--reps` steps. Each step reads both losses back, so a timed
//! step includes all of its device work. `compare/loss_torch.py --device cuda` times the same
//! step in PyTorch; `scripts/gpu-check.sh` runs both on a GPU.
//!
//!     loss_timing --backend cuda --reps 20 8192 65536
//!     loss_timing --backend cpu 8192

use std::time::Instant;

use dscl_benches::loss::{LossStep, StepConfig};
use dscl_core::Backend;
use dscl_cpu::CpuBackend;
use dscl_cuda::CudaBackend;
use dscl_wgpu::WgpuBackend;

fn main() {
    if let Err(e) = run() {
        eprintln!("loss_timing: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut backend = "cpu".to_string();
    let mut reps = 10usize;
    let mut ks = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--backend" => backend = it.next().ok_or("--backend needs a value")?,
            "--reps" => {
                let v = it.next().ok_or("--reps needs a value")?;
                reps = v.parse().map_err(|e| format!("--reps: {e}"))?;
            }
            k => ks.push(
                k.parse::<usize>()
                    .map_err(|e| format!("queue length {k}: {e}"))?,
            ),
        }
    }
    if ks.is_empty() {
        ks = vec![8192, 65536];
    }
    if reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    match backend.as_str() {
        "cpu" => time_on(&CpuBackend::new(), "cpu", reps, &ks),
        "wgpu" => time_on(
            &WgpuBackend::new().map_err(|e| e.to_string())?,
            "wgpu",
            reps,
            &ks,
        ),
        "cuda" => time_on(
            &CudaBackend::new(0).map_err(|e| e.to_string())?,
            "cuda",
            reps,
            &ks,
        ),
        other => Err(format!("unknown --backend {other} (cpu, wgpu or cuda)")),
    }
}

fn time_on<B: Backend>(backend: &B, name: &str, reps: usize, ks: &[usize]) -> Result<(), String> {
    let err = |e: dscl_core::Error| e.to_string();
    for &k in ks {
        let mut step = LossStep::new(backend, StepConfig::paper(k)).map_err(err)?;
        step.run(backend).map_err(err)?;
        let mut times = Vec::with_capacity(reps);
        let mut losses = (0.0, 0.0);
        for _ in 0..reps {
            let start = Instant::now();
            losses = step.run(backend).map_err(err)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let mean = times.iter().sum::<f64>() / reps as f64;
        times.sort_by(f64::total_cmp);
        println!(
            "impl=dscl backend={name} device={} K={k} ms_per_step={mean:.2} min_ms={:.2} \
             median_ms={:.2} reps={reps} dscl_loss={:.6} pbsd_loss={:.6}",
            backend.device_name().replace(' ', "_"),
            times[0],
            times[reps / 2],
            losses.0,
            losses.1
        );
    }
    Ok(())
}
