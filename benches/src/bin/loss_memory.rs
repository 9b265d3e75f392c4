//! Peak extra resident memory of one loss step (DSCL + PBSD, forward and backward) on the CPU
//! backend, measured as `compare/loss_torch.py --memory` measures PyTorch's:
//!
//! in a fresh process per K: warm the thread pool up on a tiny step (K = 256), upload the
//! inputs, read `VmRSS`, reset `VmHWM` (`/proc/self/clear_refs`), build the loss plans (their
//! scratch buffers) and run one step, read `VmHWM`. Extra = `VmHWM - VmRSS`. The second step's
//! extra (scratch already resident) is printed too.
//!
//! Usage: `loss_memory [--parts REPS] [--block-elems N] [K ...]` (default K: 8192 65536).
//! `--parts` also times DSCL and PBSD separately (mean over REPS steps after one warm-up step);
//! `--block-elems` bounds each logits block (default: the losses' `DEFAULT_MAX_BLOCK_ELEMS`).

use std::process::{Command, ExitCode};
use std::time::Instant;

use dscl_benches::loss::{generate, LossStep, StepConfig, StepPlans};
use dscl_benches::rss::{peak_extra, status_bytes, MIB};
use dscl_core::loss::DEFAULT_MAX_BLOCK_ELEMS;
use dscl_cpu::CpuBackend;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("loss_memory: {msg}");
    ExitCode::FAILURE
}

fn child(queue_len: usize, parts: usize, block_elems: usize) -> Result<(), String> {
    let backend = CpuBackend::new();
    let cfg = StepConfig::paper(queue_len);

    // Thread pool and per-thread buffers up, on a tiny problem.
    {
        let mut warm =
            LossStep::new(&backend, StepConfig::paper(256)).map_err(|e| e.to_string())?;
        warm.run(&backend).map_err(|e| e.to_string())?;
    }

    let inputs = {
        let host = generate(&cfg);
        host.upload(&backend).map_err(|e| e.to_string())?
    };
    let rss_inputs = status_bytes("VmRSS").map_err(|e| e.to_string())?;

    let (first, first_extra) = peak_extra(|| {
        let mut plans = StepPlans::with_max_block_elems(&backend, &cfg, block_elems)?;
        let losses = plans.step(&backend, &inputs)?;
        Ok::<_, dscl_core::Error>((plans, losses))
    })
    .map_err(|e| e.to_string())?;
    let (mut plans, (dscl, pbsd)) = first.map_err(|e| e.to_string())?;
    let (second, second_extra) =
        peak_extra(|| plans.step(&backend, &inputs)).map_err(|e| e.to_string())?;
    second.map_err(|e| e.to_string())?;

    println!(
        "K={queue_len} threads={} block_rows={}/{} peak_extra_mib={:.1} steady_extra_mib={:.1} rss_inputs_mib={:.1} \
         dscl_loss={dscl:.6} pbsd_loss={pbsd:.6}",
        backend.threads(),
        plans.dscl.block_rows(),
        cfg.batch,
        first_extra as f64 / MIB,
        second_extra as f64 / MIB,
        rss_inputs as f64 / MIB,
    );

    if parts > 0 {
        let time = |name: &str, f: &mut dyn FnMut() -> dscl_core::Result<f64>| {
            f().map_err(|e| e.to_string())?;
            let start = Instant::now();
            for _ in 0..parts {
                f().map_err(|e| e.to_string())?;
            }
            let ms = start.elapsed().as_secs_f64() * 1e3 / parts as f64;
            println!("K={queue_len} part={name} ms_per_step={ms:.2}");
            Ok::<_, String>(ms)
        };
        let d = time("dscl", &mut || plans.dscl(&backend, &inputs))?;
        let p = time("pbsd", &mut || plans.pbsd(&backend, &inputs))?;
        println!(
            "K={queue_len} part=total ms_per_step={:.2} gemm_gflop={:.1} gflops_if_gemm_only={:.1}",
            d + p,
            cfg.gemm_flops() / 1e9,
            cfg.gemm_flops() / ((d + p) * 1e6),
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut parts = 0usize;
    let mut child_k = None;
    let mut block_elems = DEFAULT_MAX_BLOCK_ELEMS;
    let mut ks = Vec::new();
    while let Some(a) = args.next() {
        let parsed = match a.as_str() {
            "--parts" => args.next().and_then(|v| v.parse().ok()).map(|v| parts = v),
            "--block-elems" => args
                .next()
                .and_then(|v| v.parse().ok())
                .map(|v| block_elems = v),
            "--child" => args
                .next()
                .and_then(|v| v.parse().ok())
                .map(|v| child_k = Some(v)),
            k => k.parse().ok().map(|v| ks.push(v)),
        };
        if parsed.is_none() {
            return fail(format!(
                "bad argument {a:?}; usage: loss_memory [--parts REPS] [--block-elems N] [K ...]"
            ));
        }
    }
    if let Some(k) = child_k {
        return match child(k, parts, block_elems) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    if ks.is_empty() {
        ks = vec![8192, 65536];
    }
    // One fresh process per K, so no allocator state carries over between the measurements.
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return fail(e),
    };
    for k in ks {
        let status = Command::new(&exe)
            .args(["--child", &k.to_string(), "--parts", &parts.to_string()])
            .args(["--block-elems", &block_elems.to_string()])
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => return fail(format!("K={k}: child exited with {s}")),
            Err(e) => return fail(e),
        }
    }
    ExitCode::SUCCESS
}
