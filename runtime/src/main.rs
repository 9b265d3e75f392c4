//! The `runtime` command line.

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use dscl_core::reference::ReferenceBackend;
use dscl_core::Backend;
use dscl_cpu::CpuBackend;
use dscl_runtime::backend_choice::BackendChoice;
use dscl_runtime::vectors::Vectors;
use dscl_runtime::verify::{compare, evaluate};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "runtime",
    version,
    about = "Decoupled supervised contrastive learning (DSCL + PBSD) for long-tailed recognition"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a backend against independent loss values: evaluates SupCon, DSCL and PBSD with
    /// gradients for the inputs of a vectors file and compares every output.
    Verify {
        /// Vectors file (JSON; schema in tests/data/VECTORS.md).
        file: PathBuf,
        /// Device to evaluate on.
        #[arg(long, value_enum, default_value = "cpu")]
        backend: BackendChoice,
        /// Largest relative error accepted for every output.
        #[arg(long, default_value_t = 1e-4)]
        tol: f64,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Verify { file, backend, tol } => verify(&file, backend, tol),
    }
}

fn verify(file: &Path, choice: BackendChoice, tol: f64) -> Result<ExitCode> {
    if !(tol.is_finite() && tol > 0.0) {
        bail!("--tol must be a positive number, got {tol}");
    }
    let vectors = Vectors::from_path(file)?;
    match choice {
        BackendChoice::Cpu => verify_on(&CpuBackend::new(), &vectors, tol),
        BackendChoice::Reference => verify_on(&ReferenceBackend::<f64>::new(), &vectors, tol),
        BackendChoice::Cuda | BackendChoice::Wgpu => bail!(
            "backend `{}` is not part of this build of runtime; available: cpu, reference",
            choice.name()
        ),
    }
}

fn verify_on<B: Backend>(backend: &B, vectors: &Vectors, tol: f64) -> Result<ExitCode> {
    println!(
        "verifying on {} (B={}, d={}, K={}, C={}, tau={}, beta={}), tolerance {tol:e}",
        backend.device_name(),
        vectors.batch,
        vectors.dim,
        vectors.queue_len,
        vectors.crops,
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
