//! `runtime train`: stage 1, in phases:
//!
//! 1. flags: resolved into the run's configuration and checked, unused ones refused,
//!    `--stop-after` checked, `--max-index-mib` put in force;
//! 2. data: the training set indexed and checked;
//! 3. memory: stage 1's estimate against the machine's free memory;
//! 4. device: the backend opened;
//! 5. output directory: locked, and claimed for a new run (or the one `--resume` continues);
//! 6. the work: stage 1, checkpointed into `OUT/stage1.safetensors`.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{bail, Result};
use dscl_runtime::config::{LinearArgs, RunConfig};
use dscl_runtime::data::open_train;
use dscl_runtime::io::out_dir::{self, RUN_FILES};
use dscl_runtime::memory;
use dscl_runtime::train::stage1;

use crate::cli::{refuse_unused_flags, CommandName, TrainCommand};

pub fn run(cmd: TrainCommand, given: &BTreeSet<String>) -> Result<ExitCode> {
    let TrainCommand {
        common,
        data,
        train,
        resume,
        overwrite,
        stop_after,
    } = cmd;
    // 1. Flags.
    let cfg = RunConfig::resolve(&data, &train, &LinearArgs::default(), common.seed)?;
    refuse_unused_flags(CommandName::Train, Some(&cfg), given)?;
    if stop_after == Some(0) {
        bail!("--stop-after must be at least 1");
    }
    common.apply()?;
    // 2. Data.
    let train_set = open_train(&cfg)?;
    // 3. Memory.
    memory::check_on(
        &memory::estimate(&cfg, train_set.num_classes())?,
        common.backend,
    )?;
    // 4. Device.
    with_backend!(common, |b| {
        // 5. Output directory.
        let _lock = out_dir::lock(&common.out)?;
        out_dir::claim(&common.out, RUN_FILES, RUN_FILES, resume, overwrite)?;
        // 6. The work.
        let path = stage1::train(b, &cfg, train_set, &common.out, resume, stop_after)?;
        eprintln!("wrote {}", path.display());
        Ok(())
    })
}
