//! `runtime linear`: stage 2 on a stage-1 checkpoint, in phases:
//!
//! 1. flags: the stage-2 values checked, unused ones refused, `--max-index-mib` put in force;
//! 2. data and memory: the checkpoint read, the training set it names indexed and checked,
//!    and the memory stage 2 needs checked against it;
//! 3. device: the backend opened;
//! 4. output directory: locked, and claimed for a new classifier;
//! 5. the work: stage 2 trained, `OUT/linear.safetensors` written; with `--eval-every-epoch`,
//!    the final model's metrics and the best epoch's printed.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Result;
use dscl_runtime::io::out_dir::{self, EPOCHS_FILE, LINEAR_FILE};
use dscl_runtime::train::stage2;

use crate::cli::{refuse_unused_flags, CommandName, LinearCommand};

pub fn run(cmd: LinearCommand, given: &BTreeSet<String>) -> Result<ExitCode> {
    let LinearCommand {
        common,
        checkpoint,
        linear,
        eval,
        overwrite,
    } = cmd;
    // 1. Flags.
    linear.check()?;
    refuse_unused_flags(CommandName::Linear, None, given)?;
    common.apply()?;
    // 2. Data and memory.
    let input = stage2::Stage2Input::prepare(common.backend, None, None, &checkpoint, &linear)?;
    // 3. Device.
    with_backend!(common, |b| {
        // 4. Output directory.
        let _lock = out_dir::lock(&common.out)?;
        out_dir::claim(
            &common.out,
            &[LINEAR_FILE],
            &[LINEAR_FILE, EPOCHS_FILE],
            false,
            overwrite,
        )?;
        // 5. The work.
        let s2 = stage2::train(b, input, &eval, &common.out)?;
        eprintln!("wrote {}", s2.checkpoint.display());
        if let (Some(m), Some(epochs)) = (&s2.final_metrics, &s2.epochs) {
            println!("{}", m.table());
            println!("{}", epochs.best_table());
        }
        Ok(())
    })
}
