//! `runtime verify`: a backend against independent loss values, in phases:
//!
//! 1. flags: `--tol` checked;
//! 2. data: the vectors file read and checked;
//! 3. device: the backend opened (the f64 reference too, which only this command runs);
//! 4. the work: SupCon, DSCL and PBSD with their gradients evaluated on the file's inputs and
//!    every output compared with the file's, the table printed; the exit status fails when an
//!    output is out of tolerance.

use std::process::ExitCode;

use anyhow::{bail, Result};
use dscl_core::backend::prelude::*;
use dscl_core::reference::ReferenceBackend;
use dscl_cpu::CpuBackend;
use dscl_cuda::Precision;
use dscl_runtime::backend_choice::BackendChoice;
use dscl_runtime::io::vectors::Vectors;
use dscl_runtime::verify::{compare, evaluate};

use super::{open_cuda, open_wgpu};
use crate::cli::VerifyCommand;

pub fn run(cmd: VerifyCommand) -> Result<ExitCode> {
    let VerifyCommand { file, backend, tol } = cmd;
    // 1. Flags.
    if !(tol.is_finite() && tol > 0.0) {
        bail!("--tol must be a positive number, got {tol}");
    }
    // 2. Data.
    let vectors = Vectors::from_path(&file)?;
    // 3. Device, and 4. the work on it.
    match backend {
        BackendChoice::Cpu => verify_on(&CpuBackend::new(), &vectors, tol),
        BackendChoice::Reference => verify_on(&ReferenceBackend::<f64>::new(), &vectors, tol),
        BackendChoice::Wgpu => verify_on(&open_wgpu()?, &vectors, tol),
        BackendChoice::Cuda => verify_on(&open_cuda(Precision::Fp32, 0)?, &vectors, tol),
    }
}

fn verify_on<B: Backend>(backend: &B, vectors: &Vectors, tol: f64) -> Result<ExitCode> {
    println!(
        "verifying on {} (B={}, d={}, K={}, C={}, tau={}, beta={}), tolerance {tol:e}",
        backend.device_name(),
        vectors.problem.shape.batch,
        vectors.problem.shape.dim,
        vectors.problem.shape.queue_len,
        vectors.problem.crops,
        vectors.temperature,
        vectors.beta
    );
    let got = evaluate(backend, vectors)?;
    let rows = compare(&got, &vectors.expected, tol);
    println!(
        "{:<28} {:>14} {:>14}  result",
        "output", "max abs err", "max rel err"
    );
    for r in &rows {
        println!(
            "{:<28} {:>14.3e} {:>14.3e}  {}",
            r.name,
            r.max_abs_error,
            r.max_rel_error,
            if r.within_tolerance { "ok" } else { "FAIL" }
        );
    }
    let failed = rows.iter().filter(|r| !r.within_tolerance).count();
    if failed == 0 {
        println!("all {} outputs within {tol:e}", rows.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{failed} of {} outputs exceed {tol:e}", rows.len());
        Ok(ExitCode::FAILURE)
    }
}
