//! The `runtime` command line.

use anyhow::{bail, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use dscl_core::reference::ReferenceBackend;
use dscl_core::Backend;
use dscl_cpu::CpuBackend;
use dscl_cuda::{CudaBackend, Precision};
use dscl_runtime::backend_choice::BackendChoice;
use dscl_runtime::config::{
    refuse_unused_flags, CommandName, DataArgs, EvalArgs, LinearArgs, LossKind, RunConfig,
    TrainArgs,
};
use dscl_runtime::datasets::{open_test, open_train};
use dscl_runtime::evaluate::METRICS_FILE;
use dscl_runtime::interrupt::{self, Interrupted};
use dscl_runtime::stage1::{LOG_FILE, STAGE1_FILE};
use dscl_runtime::stage2::{EPOCHS_FILE, LINEAR_FILE};
use dscl_runtime::vectors::Vectors;
use dscl_runtime::verify::{compare, evaluate};
use dscl_runtime::{evaluate, memory, out_dir, plot, stage1, stage2};
use dscl_wgpu::WgpuBackend;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What a stage-1 run (`train`, `run`) leaves in its output directory: a directory holding any
/// of them holds a run, and `--overwrite` removes them all.
const RUN_FILES: &[&str] = &[
    STAGE1_FILE,
    LOG_FILE,
    LINEAR_FILE,
    EPOCHS_FILE,
    METRICS_FILE,
    "plot.svg",
];

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
    /// Stage 1: learn the representation with DSCL + PBSD (or SupCon, or train the
    /// cross-entropy baseline end to end with --loss ce). Writes OUT/stage1.safetensors.
    Train {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        train: TrainArgs,
        /// Continue from OUT/stage1.safetensors.
        #[arg(long)]
        resume: bool,
        /// Replace the run OUT holds (its checkpoints, log, metrics and plot) with a new one.
        #[arg(long)]
        overwrite: bool,
        /// End after N steps of this invocation, with a checkpoint written (continue later
        /// with --resume).
        #[arg(long, value_name = "N")]
        stop_after: Option<u64>,
    },
    /// Stage 2: a linear classifier on the frozen stage-1 backbone, class-balanced (on a
    /// --loss ce checkpoint: classifier re-training, cRT). Writes OUT/linear.safetensors.
    Linear {
        #[command(flatten)]
        common: Common,
        /// The stage-1 checkpoint (of a contrastive or a --loss ce run).
        #[arg(long)]
        checkpoint: PathBuf,
        #[command(flatten)]
        linear: LinearArgs,
        #[command(flatten)]
        eval: EvalArgs,
        /// Replace the classifier OUT holds (linear.safetensors) with a new one.
        #[arg(long)]
        overwrite: bool,
    },
    /// Top-1 on a test set, overall and on Many / Medium / Few classes; writes
    /// OUT/metrics.json.
    Eval {
        #[command(flatten)]
        common: Common,
        /// The classifier checkpoint (linear.safetensors, or stage1.safetensors of --loss ce).
        #[arg(long)]
        checkpoint: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        eval: EvalArgs,
    },
    /// Both stages then evaluation in one go (with no data flags: the built-in digits).
    Run {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        train: TrainArgs,
        #[command(flatten)]
        linear: LinearArgs,
        #[command(flatten)]
        eval: EvalArgs,
        /// Continue stage 1 from OUT/stage1.safetensors.
        #[arg(long)]
        resume: bool,
        /// Replace the run OUT holds (its checkpoints, log, metrics and plot) with a new one.
        #[arg(long)]
        overwrite: bool,
    },
    /// Draw OUT/plot.svg: the loss curve and per-class accuracy against class size.
    Plot {
        /// A run's output directory.
        out: PathBuf,
    },
}

/// Flags every training and evaluation command takes.
#[derive(clap::Args)]
struct Common {
    /// Device to run on.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendChoice,
    /// Output directory.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Seeds initialisation, sample order and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Arithmetic of GEMM and convolutions on --backend cuda: fp32, tf32 (tensor cores, inputs
    /// rounded to a 10-bit mantissa) or bf16 (inputs rounded to bf16, f32 accumulation).
    /// Every other backend computes in fp32.
    #[arg(long, default_value = "fp32", value_name = "fp32|tf32|bf16")]
    precision: Precision,
    /// Largest list or ImageNet-LT JSON file read, in MiB (default 2048); a larger one is
    /// refused before it is read.
    #[arg(long, value_name = "MIB")]
    max_index_mib: Option<u64>,
}

impl Common {
    /// Puts the process-wide settings of these flags in force.
    fn apply(&self) -> Result<()> {
        if let Some(mib) = self.max_index_mib {
            if mib == 0 {
                bail!("--max-index-mib must be at least 1");
            }
            let bytes = mib.checked_mul(1 << 20).ok_or_else(|| {
                anyhow::anyhow!("--max-index-mib {mib} is more bytes than a file can have")
            })?;
            dscl_runtime::bounded_read::set_index_limit(bytes);
        }
        Ok(())
    }
}

/// Opens the wgpu device, saying which adapter it is.
fn open_wgpu() -> Result<WgpuBackend> {
    WgpuBackend::new().map_err(|e| anyhow::anyhow!("--backend wgpu: {e}"))
}

/// Opens GPU 0 and compiles the CUDA kernels for it, or says why it cannot.
fn open_cuda(precision: Precision) -> Result<CudaBackend> {
    CudaBackend::with_precision(0, precision).map_err(|e| anyhow::anyhow!("--backend cuda: {e}"))
}

/// Runs `$body` with `$b` bound to the chosen device (one monomorphic copy per backend, since
/// the training code is generic over `Backend`).
macro_rules! with_backend {
    ($common:expr, |$b:ident| $body:block) => {{
        let choice: BackendChoice = $common.backend;
        let precision: Precision = $common.precision;
        precision
            .check_backend(choice.name())
            .map_err(anyhow::Error::msg)?;
        match choice {
            BackendChoice::Cpu => {
                let backend = CpuBackend::new();
                eprintln!("backend: {}", backend.device_name());
                let $b = &backend;
                let result: Result<()> = $body;
                result.map(|()| ExitCode::SUCCESS)
            }
            BackendChoice::Wgpu => {
                let backend = open_wgpu()?;
                eprintln!("backend: {}", backend.device_name());
                let $b = &backend;
                let result: Result<()> = $body;
                result.map(|()| ExitCode::SUCCESS)
            }
            BackendChoice::Reference => bail!(
                "the reference backend computes in f64 and is for `runtime verify` only; train \
                 with --backend cpu"
            ),
            BackendChoice::Cuda => {
                let backend = open_cuda(precision)?;
                eprintln!("backend: {}", backend.device_name());
                let $b = &backend;
                let result: Result<()> = $body;
                result.map(|()| ExitCode::SUCCESS)
            }
        }
    }};
}

/// Lets a write beyond the file-size limit (`ulimit -f`, set by some batch schedulers) fail
/// with EFBIG, which the output-directory check and the checkpoint writer report with the
/// file's name, instead of the default action of SIGXFSZ killing the process without a word.
#[cfg(unix)]
fn report_file_size_limit_as_an_error() {
    // SAFETY: called first thing in `main`, before any other thread exists; SIG_IGN installs
    // no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

#[cfg(not(unix))]
fn report_file_size_limit_as_an_error() {}

/// The long names (`--flag`) of the subcommand's flags that the command line gave, as opposed
/// to those left at their defaults.
fn flags_given(matches: &ArgMatches) -> BTreeSet<String> {
    let Some((name, given)) = matches.subcommand() else {
        return BTreeSet::new();
    };
    let cli = Cli::command();
    let Some(command) = cli.find_subcommand(name) else {
        return BTreeSet::new();
    };
    command
        .get_arguments()
        .filter(|arg| given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
        .collect()
}

fn main() -> ExitCode {
    report_file_size_limit_as_an_error();
    let matches = Cli::command().get_matches();
    let given = flags_given(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `train` and `run` continue with --resume; `linear` starts over.
    let resumable = matches!(cli.command, Command::Train { .. } | Command::Run { .. });
    if let Err(err) = interrupt::install() {
        eprintln!("error: {err:#}");
        return ExitCode::from(2);
    }
    match run(cli, &given) {
        Ok(code) => code,
        Err(err) => match err.downcast_ref::<Interrupted>() {
            Some(stop) => {
                let args: Vec<String> = std::env::args().collect();
                eprintln!("{stop}");
                eprintln!(
                    "resume with: {}",
                    interrupt::resume_command(&args, resumable)
                );
                ExitCode::from(stop.exit_code())
            }
            None => {
                eprintln!("error: {err:#}");
                ExitCode::from(2)
            }
        },
    }
}

/// Each command in phases: 1. its flags, resolved and checked, unused ones refused; 2. its
/// data, indexed and checked (every listed file exists, labels in range, test data with the
/// training set's classes); 3. the device; 4. the output directory, locked and claimed;
/// 5. the work. Nothing is trained before 1-4 have passed.
fn run(cli: Cli, given: &BTreeSet<String>) -> Result<ExitCode> {
    match cli.command {
        Command::Verify { file, backend, tol } => verify(&file, backend, tol),
        Command::Train {
            common,
            data,
            train,
            resume,
            overwrite,
            stop_after,
        } => {
            let cfg = RunConfig::resolve(&data, &train, &LinearArgs::default(), common.seed)?;
            refuse_unused_flags(CommandName::Train, Some(&cfg), given)?;
            if stop_after == Some(0) {
                bail!("--stop-after must be at least 1");
            }
            common.apply()?;
            let train_set = open_train(&cfg)?;
            memory::check_on(
                &memory::estimate(&cfg, train_set.num_classes())?,
                common.backend,
            )?;
            with_backend!(common, |b| {
                let _lock = out_dir::lock(&common.out)?;
                out_dir::claim(&common.out, RUN_FILES, RUN_FILES, resume, overwrite)?;
                let path = stage1::train(b, &cfg, train_set, &common.out, resume, stop_after)?;
                eprintln!("wrote {}", path.display());
                Ok(())
            })
        }
        Command::Linear {
            common,
            checkpoint,
            linear,
            eval,
            overwrite,
        } => {
            linear.check()?;
            refuse_unused_flags(CommandName::Linear, None, given)?;
            common.apply()?;
            with_backend!(common, |b| {
                let _lock = out_dir::lock(&common.out)?;
                out_dir::claim(
                    &common.out,
                    &[LINEAR_FILE],
                    &[LINEAR_FILE, EPOCHS_FILE],
                    false,
                    overwrite,
                )?;
                let s2 =
                    stage2::train(b, common.backend, &checkpoint, &linear, &eval, &common.out)?;
                eprintln!("wrote {}", s2.checkpoint.display());
                if let (Some(m), Some(epochs)) = (&s2.final_metrics, &s2.epochs) {
                    println!("{}", m.table());
                    println!("{}", epochs.best_table());
                }
                Ok(())
            })
        }
        Command::Eval {
            common,
            checkpoint,
            data,
            eval,
        } => {
            refuse_unused_flags(CommandName::Eval, None, given)?;
            if data.workers == Some(0) {
                bail!("--workers must be at least 1 (or left out: one per CPU)");
            }
            common.apply()?;
            with_backend!(common, |b| {
                let _lock = out_dir::lock(&common.out)?;
                let m = evaluate::evaluate(b, &checkpoint, Some(&data), &eval, &common.out)?;
                println!("{}", m.table());
                Ok(())
            })
        }
        Command::Run {
            common,
            data,
            train,
            linear,
            eval,
            resume,
            overwrite,
        } => {
            let cfg = RunConfig::resolve(&data, &train, &linear, common.seed)?;
            refuse_unused_flags(CommandName::Run, Some(&cfg), given)?;
            if cfg.loss == LossKind::Ce && linear.eval_every_epoch {
                bail!(
                    "--eval-every-epoch evaluates stage-2 epochs; `run --loss ce` has no stage \
                     2 (for classifier re-training, run `runtime linear` on its checkpoint)"
                );
            }
            common.apply()?;
            let train_set = open_train(&cfg)?;
            // The test set is indexed and checked against the training classes now, so a
            // missing or mismatched test set stops the run before hours of training.
            open_test(&cfg, train_set.num_classes())?;
            memory::check_on(
                &memory::estimate(&cfg, train_set.num_classes())?,
                common.backend,
            )?;
            if cfg.loss != LossKind::Ce {
                memory::check_on(
                    &memory::estimate_linear(&cfg, train_set.num_classes(), train_set.len())?,
                    common.backend,
                )?;
            }
            let out = common.out.clone();
            let choice = common.backend;
            with_backend!(common, |b| {
                let _lock = out_dir::lock(&out)?;
                out_dir::claim(&out, RUN_FILES, RUN_FILES, resume, overwrite)?;
                let stage1 = stage1::train(b, &cfg, train_set, &out, resume, None)?;
                let (classifier, epochs) = if cfg.loss == LossKind::Ce {
                    (stage1, None)
                } else {
                    let s2 = stage2::train(b, choice, &stage1, &linear, &eval, &out)?;
                    (s2.checkpoint, s2.epochs)
                };
                let m = evaluate::evaluate(b, &classifier, Some(&data), &eval, &out)?;
                println!("{}", m.table());
                if let Some(epochs) = &epochs {
                    println!("{}", epochs.best_table());
                }
                match plot::plot(&out) {
                    Ok(p) => eprintln!(
                        "wrote {} and {}",
                        out.join("metrics.json").display(),
                        p.display()
                    ),
                    Err(e) => eprintln!("note: no plot: {e:#}"),
                }
                Ok(())
            })
        }
        Command::Plot { out } => {
            let path = plot::plot(&out)?;
            println!("wrote {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
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
        BackendChoice::Wgpu => verify_on(&open_wgpu()?, &vectors, tol),
        BackendChoice::Cuda => verify_on(&open_cuda(Precision::Fp32)?, &vectors, tol),
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
