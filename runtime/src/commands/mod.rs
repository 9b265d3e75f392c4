//! The commands, one file each, each written as numbered phases in the order they run. The
//! training and evaluation commands check everything they can before any work: 1. their
//! flags, resolved and checked, unused ones refused; 2. their data, indexed and checked (every
//! listed file exists, labels in range, test data with the training set's classes); 3. the
//! memory the run needs; 4. the device; 5. the output directory, locked and claimed; 6. the
//! work. Nothing is trained before 1-5 have passed. `linear` and `eval` take their data from a
//! checkpoint, so their data (and `linear`'s memory) are checked as their work starts, after
//! the checkpoint is read.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Result;
use dscl_cuda::{CudaBackend, Precision};
use dscl_runtime::backend_choice::BackendChoice;
use dscl_runtime::cluster::Cluster;
use dscl_runtime::config::TrainArgs;
use dscl_runtime::interrupt::Interrupted;
use dscl_wgpu::WgpuBackend;

use crate::cli::Command;

/// Runs `$body` with `$b` bound to the chosen device (one monomorphic copy per backend, since
/// the training code is generic over `Backend`).
macro_rules! with_backend {
    ($common:expr, |$b:ident| $body:block) => {{
        use dscl_core::backend::MemoryOps as _;
        use dscl_runtime::backend_choice::BackendChoice;
        let choice: BackendChoice = $common.backend;
        let precision: dscl_cuda::Precision = $common.precision;
        precision
            .check_backend(choice.name())
            .map_err(anyhow::Error::msg)?;
        match choice {
            BackendChoice::Cpu => {
                let backend = dscl_cpu::CpuBackend::new();
                eprintln!("backend: {}", backend.device_name());
                let $b = &backend;
                let result: anyhow::Result<()> = $body;
                result.map(|()| std::process::ExitCode::SUCCESS)
            }
            BackendChoice::Wgpu => {
                let backend = $crate::commands::open_wgpu()?;
                eprintln!("backend: {}", backend.device_name());
                let $b = &backend;
                let result: anyhow::Result<()> = $body;
                result.map(|()| std::process::ExitCode::SUCCESS)
            }
            BackendChoice::Reference => anyhow::bail!(
                "the reference backend computes in f64 and is for `runtime verify` only; train \
                 with --backend cpu"
            ),
            BackendChoice::Cuda => {
                let backend = $crate::commands::open_cuda(precision, $common.cuda_device())?;
                eprintln!("backend: {}", backend.device_name());
                let $b = &backend;
                let result: anyhow::Result<()> = $body;
                result.map(|()| std::process::ExitCode::SUCCESS)
            }
        }
    }};
}

mod eval;
mod linear;
mod plot;
mod run;
mod train;
mod verify;

/// Runs `command`; `given` holds the flags its command line gave (`--name`).
pub fn run(command: Command, given: &BTreeSet<String>) -> Result<ExitCode> {
    match command {
        Command::Verify(cmd) => verify::run(cmd),
        Command::Train(cmd) => train::run(cmd, given),
        Command::Linear(cmd) => linear::run(cmd, given),
        Command::Eval(cmd) => eval::run(cmd, given),
        Command::Run(cmd) => run::run(cmd, given),
        Command::Plot(cmd) => plot::run(cmd),
    }
}

/// Runs a command's phases as this process's part of its run: with `distributed`, it joins
/// its MPI job first (and a CUDA rank finds NCCL, or says which library is missing), and an
/// error on this rank ends every rank of the job (printed with the rank), so no rank waits for
/// it.
fn on_cluster(
    distributed: bool,
    backend: BackendChoice,
    phases: impl FnOnce(&Cluster) -> Result<ExitCode>,
) -> Result<ExitCode> {
    let cluster = Cluster::join(distributed)?;
    let result = find_device_collective(&cluster, backend).and_then(|()| phases(&cluster));
    if let Err(err) = &result {
        let placement = cluster.placement();
        // Every rank stops together at a signal (they agree on the step), with the checkpoint
        // written: each exits as one process does.
        let interrupted = err.downcast_ref::<Interrupted>().is_some();
        if placement.world > 1 && !interrupted {
            eprintln!(
                "rank {} of {}: error: {err:#}",
                placement.rank, placement.world
            );
            cluster.abort(2);
        }
    }
    result
}

/// The CUDA ranks of a run of several processes exchange through NCCL: without it, say so
/// before anything else is done.
#[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
fn find_device_collective(cluster: &Cluster, backend: BackendChoice) -> Result<()> {
    #[cfg(feature = "mpi")]
    if cluster.placement().world > 1 && backend == BackendChoice::Cuda {
        dscl_cuda::find_nccl().map_err(|e| anyhow::anyhow!("--backend cuda --distributed: {e}"))?;
    }
    Ok(())
}

/// A `--distributed` run has one replica group per process: `--replicas` defaults to the
/// process count, and another value is refused.
fn replicas_of_the_job(cluster: &Cluster, train: &mut TrainArgs) -> Result<()> {
    let world = cluster.placement().world;
    if world > 1 {
        match train.replicas {
            Some(r) if r != world => anyhow::bail!(
                "--replicas {r} with {world} processes: a --distributed run has one replica \
                 group per process"
            ),
            _ => train.replicas = Some(world),
        }
    }
    Ok(())
}

/// Opens the wgpu device, saying which adapter it is.
fn open_wgpu() -> Result<WgpuBackend> {
    WgpuBackend::new().map_err(|e| anyhow::anyhow!("--backend wgpu: {e}"))
}

/// Opens GPU `device` and compiles the CUDA kernels for it, or says why it cannot.
fn open_cuda(precision: Precision, device: usize) -> Result<CudaBackend> {
    CudaBackend::with_precision(device, precision)
        .map_err(|e| anyhow::anyhow!("--backend cuda: GPU {device}: {e}"))
}
