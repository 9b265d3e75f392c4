//! The command line: the commands and their flags as clap parses them, which flags a command
//! line gave, and the refusal of flags a command would ignore. The flags shared with the
//! library (data, stage 1, stage 2, evaluation) are [`dscl_runtime::config`]'s, since a run
//! records its data flags in every checkpoint.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use dscl_cuda::Precision;
use dscl_runtime::backend_choice::BackendChoice;
use dscl_runtime::config::{
    DataArgs, DataKind, EvalArgs, LinearArgs, LossKind, RunConfig, TrainArgs,
};

#[derive(Parser)]
#[command(
    name = "runtime",
    version,
    about = "Decoupled supervised contrastive learning (DSCL + PBSD) for long-tailed recognition"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Check a backend against independent loss values: evaluates SupCon, DSCL and PBSD with
    /// gradients for the inputs of a vectors file and compares every output.
    Verify(VerifyCommand),
    /// Stage 1: learn the representation with DSCL + PBSD (or SupCon, or train the
    /// cross-entropy baseline end to end with --loss ce). Writes OUT/stage1.safetensors.
    Train(TrainCommand),
    /// Stage 2: a linear classifier on the frozen stage-1 backbone, class-balanced (on a
    /// --loss ce checkpoint: classifier re-training, cRT). Writes OUT/linear.safetensors.
    Linear(LinearCommand),
    /// Top-1 on a test set, overall and on Many / Medium / Few classes; writes
    /// OUT/metrics.json.
    Eval(EvalCommand),
    /// Both stages then evaluation in one go (with no data flags: the built-in digits).
    Run(RunCommand),
    /// Draw OUT/plot.svg: the loss curve and per-class accuracy against class size.
    Plot(PlotCommand),
}

impl Command {
    /// Whether an interrupted invocation continues with `--resume` (`train` and `run`) rather
    /// than starting over (`linear`, whose stage 2 keeps no checkpoint part-way).
    pub fn resumable(&self) -> bool {
        matches!(self, Command::Train(_) | Command::Run(_))
    }
}

// The flags of each command. Their help is the variant's doc comment above, so these structs
// carry plain comments: a doc comment here would compete with it.

// `runtime verify`.
#[derive(clap::Args)]
pub struct VerifyCommand {
    /// Vectors file (JSON; schema in tests/data/VECTORS.md).
    pub file: PathBuf,
    /// Device to evaluate on.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendChoice,
    /// Largest relative error accepted for every output.
    #[arg(long, default_value_t = 1e-4)]
    pub tol: f64,
}

// `runtime train`.
#[derive(clap::Args)]
pub struct TrainCommand {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub train: TrainArgs,
    /// Continue from OUT/stage1.safetensors.
    #[arg(long)]
    pub resume: bool,
    /// Replace the run OUT holds (its checkpoints, log, metrics and plot) with a new one.
    #[arg(long)]
    pub overwrite: bool,
    /// End after N steps of this invocation, with a checkpoint written (continue later
    /// with --resume).
    #[arg(long, value_name = "N")]
    pub stop_after: Option<u64>,
    /// Train as one rank of an MPI job (`mpirun -np R runtime train --distributed ...`): R
    /// processes, one replica group each (--replicas is R), rank 0 writing OUT. Needs a build
    /// with `--features mpi`.
    #[arg(long)]
    pub distributed: bool,
}

// `runtime linear`.
#[derive(clap::Args)]
pub struct LinearCommand {
    #[command(flatten)]
    pub common: Common,
    /// The stage-1 checkpoint (of a contrastive or a --loss ce run).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub linear: LinearArgs,
    #[command(flatten)]
    pub eval: EvalArgs,
    /// Replace the classifier OUT holds (linear.safetensors) with a new one.
    #[arg(long)]
    pub overwrite: bool,
    /// Train as one rank of an MPI job, as `train --distributed`: as many processes as the
    /// checkpoint's run has replica groups.
    #[arg(long)]
    pub distributed: bool,
}

// `runtime eval`.
#[derive(clap::Args)]
pub struct EvalCommand {
    #[command(flatten)]
    pub common: Common,
    /// The classifier checkpoint (linear.safetensors, or stage1.safetensors of --loss ce).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub eval: EvalArgs,
}

// `runtime run`.
#[derive(clap::Args)]
pub struct RunCommand {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub linear: LinearArgs,
    #[command(flatten)]
    pub eval: EvalArgs,
    /// Continue stage 1 from OUT/stage1.safetensors.
    #[arg(long)]
    pub resume: bool,
    /// Replace the run OUT holds (its checkpoints, log, metrics and plot) with a new one.
    #[arg(long)]
    pub overwrite: bool,
    /// Run both stages and the evaluation as one rank of an MPI job, as `train
    /// --distributed`.
    #[arg(long)]
    pub distributed: bool,
}

// `runtime plot`.
#[derive(clap::Args)]
pub struct PlotCommand {
    /// A run's output directory.
    pub out: PathBuf,
}

/// Flags every training and evaluation command takes.
#[derive(clap::Args)]
pub struct Common {
    /// Device to run on.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendChoice,
    /// Output directory.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Seeds initialisation, sample order and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Arithmetic of GEMM and convolutions on --backend cuda: fp32, tf32 (tensor cores, inputs
    /// rounded to a 10-bit mantissa) or bf16 (inputs rounded to bf16, f32 accumulation).
    /// Every other backend computes in fp32.
    #[arg(long, default_value = "fp32", value_name = "fp32|tf32|bf16")]
    pub precision: Precision,
    /// Largest list or ImageNet-LT JSON file read, in MiB (default 2048); a larger one is
    /// refused before it is read.
    #[arg(long, value_name = "MIB")]
    pub max_index_mib: Option<u64>,
    /// The GPU of --backend cuda (default: the process's local rank under an MPI launcher,
    /// so each rank of a --distributed run on a node takes its own GPU; else 0).
    #[arg(long, value_name = "N")]
    pub device: Option<usize>,
}

impl Common {
    /// The CUDA device this process opens.
    pub fn cuda_device(&self) -> usize {
        self.device
            .or_else(dscl_runtime::cluster::local_rank)
            .unwrap_or(0)
    }

    /// Puts the process-wide settings of these flags in force.
    pub fn apply(&self) -> Result<()> {
        if self.device.is_some() && self.backend != BackendChoice::Cuda {
            bail!("--device picks the GPU of --backend cuda");
        }
        if let Some(mib) = self.max_index_mib {
            if mib == 0 {
                bail!("--max-index-mib must be at least 1");
            }
            let bytes = mib.checked_mul(1 << 20).ok_or_else(|| {
                anyhow::anyhow!("--max-index-mib {mib} is more bytes than a file can have")
            })?;
            dscl_runtime::io::bounded_read::set_index_limit(bytes);
        }
        Ok(())
    }
}

/// Parses the process's arguments (exiting with clap's message on bad ones) into the command
/// and the long names (`--flag`) of the flags the command line gave, as opposed to those left
/// at their defaults.
pub fn parse() -> (Cli, BTreeSet<String>) {
    let matches = Cli::command().get_matches();
    let given = flags_given(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    (cli, given)
}

/// The long names of the subcommand's flags that `matches` holds from the command line.
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

/// The commands that take training, data and evaluation flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandName {
    Train,
    Linear,
    Eval,
    Run,
}

/// The flags given on the command line (as `--name`) that `command` would not use with this
/// configuration (`cfg`: the resolved one of `train` and `run`; `linear` and `eval` take
/// theirs from a checkpoint), each with the reason. A flag that would be ignored is refused:
/// a user who sets `--imbalance` on list data, or `--queue` for cross-entropy, believes it
/// changed the run.
pub fn unused_flags(
    command: CommandName,
    cfg: Option<&RunConfig>,
    given: &BTreeSet<String>,
) -> Vec<String> {
    let mut unused: Vec<(&str, String)> = Vec::new();
    let mut refuse = |flags: &[&'static str], why: &str| {
        for &flag in flags {
            if given.contains(flag) && !unused.iter().any(|(f, _)| *f == flag) {
                unused.push((flag, why.to_string()));
            }
        }
    };
    let test_flags = [
        "--test-list",
        "--imagenet-lt-test-json",
        "--test-image-folder",
    ];
    let a_test_index = given.contains("--test-list") || given.contains("--imagenet-lt-test-json");
    match command {
        CommandName::Eval => {
            refuse(
                &[
                    "--train-list",
                    "--cifar",
                    "--imagenet-lt-json",
                    "--image-folder",
                    "--imbalance",
                    "--image-size",
                    "--crop-size",
                    "--min-scale",
                    "--no-flip",
                ],
                "`eval` takes the training data and image settings from the checkpoint; give \
                 test data with --test-list, --imagenet-lt-test-json or --test-image-folder",
            );
            if !a_test_index {
                refuse(
                    &["--root"],
                    "--root resolves the paths of --test-list and --imagenet-lt-test-json, and \
                     neither is given",
                );
            }
        }
        CommandName::Linear => {
            if !given.contains("--eval-every-epoch") {
                refuse(
                    &["--split-thresholds"],
                    "`linear` evaluates only with --eval-every-epoch (or evaluate its \
                     classifier with `runtime eval`)",
                );
            }
        }
        CommandName::Train | CommandName::Run => {
            if command == CommandName::Train {
                refuse(
                    &test_flags,
                    "`train` does not evaluate; give test data to `runtime run` or \
                     `runtime eval`",
                );
            }
            if let Some(cfg) = cfg {
                refuse_unused_training_flags(command, cfg, a_test_index, &mut refuse);
            }
        }
    }
    unused
        .into_iter()
        .map(|(flag, why)| format!("{flag}: {why}"))
        .collect()
}

/// The training flags that `cfg`'s data, loss and PBSD setting leave unused.
fn refuse_unused_training_flags(
    command: CommandName,
    cfg: &RunConfig,
    a_test_index: bool,
    refuse: &mut impl FnMut(&[&'static str], &str),
) {
    if !matches!(cfg.data_kind, DataKind::Cifar | DataKind::Digits) {
        refuse(
            &["--imbalance"],
            "--imbalance subsamples CIFAR and the built-in digits; list, JSON and folder data \
             are used as they are",
        );
    }
    let root_used = matches!(cfg.data_kind, DataKind::List | DataKind::ImageNetLt)
        || (command == CommandName::Run && a_test_index);
    if !root_used {
        refuse(
            &["--root"],
            "--root resolves the paths of list and ImageNet-LT JSON files, and none is given",
        );
    }
    if cfg.loss == LossKind::Ce {
        refuse(
            &[
                "--beta",
                "--tau",
                "--queue",
                "--queue-init",
                "--momentum-encoder",
                "--pbsd-weight",
                "--crops",
                "--crop-size",
                "--crop-norm",
            ],
            "--loss ce trains a classifier end to end with cross-entropy: it has no \
             contrastive loss, queue, key encoder or PBSD",
        );
        if command == CommandName::Run {
            refuse(
                &[
                    "--linear-epochs",
                    "--linear-batch-size",
                    "--linear-lr",
                    "--linear-frozen-bn",
                ],
                "`run --loss ce` has no stage 2 (for classifier re-training, run `runtime \
                 linear` on its checkpoint)",
            );
        }
        return;
    }
    if cfg.loss == LossKind::Scl {
        refuse(
            &["--beta"],
            "--beta weighs DSCL's positives; --loss scl (SupCon) weighs them all alike",
        );
    }
    if cfg.pbsd_weight == 0.0 {
        refuse(
            &["--crops", "--crop-size", "--crop-norm"],
            "PBSD is off (--pbsd-weight 0), so no crops are made",
        );
    }
    if cfg.queue == 0 {
        refuse(&["--queue-init"], "--queue 0: there is no queue to start");
    }
}

/// Refuses the flags of [`unused_flags`], all of them in one message.
pub fn refuse_unused_flags(
    command: CommandName,
    cfg: Option<&RunConfig>,
    given: &BTreeSet<String>,
) -> Result<()> {
    let unused = unused_flags(command, cfg, given);
    if !unused.is_empty() {
        bail!(
            "{} flag(s) would be ignored, so they are refused:\n  {}",
            unused.len(),
            unused.join("\n  ")
        );
    }
    Ok(())
}
