//! The DSCL + PBSD loss step alone (forward and backward, the paper's shapes: B = 256, d = 128,
//! C = 5, a full queue of K) on one backend, in milliseconds per step: one warm-up step, then
//! the mean, minimum and median of `--reps` steps. Each step reads both losses back, so a timed
//! step includes all of its device work. `compare/loss_torch.py --device cuda` times the same
//! step in PyTorch; `scripts/gpu-check.sh` runs both on a GPU.
//!
//!     loss_timing --backend cuda --reps 20 8192 65536
//!     loss_timing --backend cuda --precision tf32 65536
//!     loss_timing --backend cpu 8192

use std::time::Instant;

use dscl_benches::cli::{self, BackendArgs, BackendJob};
use dscl_benches::loss::{LossStep, StepConfig};
use dscl_core::backend::prelude::*;

fn main() {
    if let Err(e) = run() {
        eprintln!("loss_timing: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut backend = BackendArgs::default();
    let mut reps = 10usize;
    let mut ks = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg.starts_with("--") {
            let value = it.next().ok_or(format!("{arg} needs a value"))?;
            if backend.accept(&arg, &value)? {
                continue;
            }
            match arg.as_str() {
                "--reps" => reps = cli::parse_count(&arg, &value)?,
                _ => return Err(format!("unknown flag {arg}")),
            }
        } else {
            ks.push(
                arg.parse::<usize>()
                    .map_err(|e| format!("queue length {arg}: {e}"))?,
            );
        }
    }
    if ks.is_empty() {
        ks = vec![8192, 65536];
    }
    if reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    let job = LossTiming {
        backend: &backend,
        reps,
        ks: &ks,
    };
    cli::run_on_backend(&backend, job)
}

struct LossTiming<'a> {
    backend: &'a BackendArgs,
    reps: usize,
    ks: &'a [usize],
}

impl BackendJob for LossTiming<'_> {
    fn run<B: Backend<Elem = f32>>(self, backend: &B, device: &str) -> Result<(), String> {
        time_on(backend, self.backend, device, self.reps, self.ks)
    }
}

fn time_on<B: Backend>(
    backend: &B,
    args: &BackendArgs,
    device: &str,
    reps: usize,
    ks: &[usize],
) -> Result<(), String> {
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
            "impl=dscl backend={} precision={} device={device} K={k} ms_per_step={mean:.2} \
             min_ms={:.2} median_ms={:.2} reps={reps} dscl_loss={:.6} pbsd_loss={:.6}",
            args.name,
            args.precision,
            times[0],
            times[reps / 2],
            losses.0,
            losses.1
        );
    }
    Ok(())
}
