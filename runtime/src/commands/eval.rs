//! `runtime eval`: a classifier checkpoint on a test set, in phases:
//!
//! 1. flags: unused ones refused, `--workers` checked, `--max-index-mib` put in force;
//! 2. data: the checkpoint read, and the test set it or the flags name indexed and checked;
//! 3. device: the backend opened;
//! 4. output directory: locked (evaluation replaces only `OUT/metrics.json`, so nothing is
//!    claimed);
//! 5. the work: the model evaluated, `OUT/metrics.json` written and the table printed.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Result;
use dscl_runtime::evaluate;
use dscl_runtime::io::out_dir;

use crate::cli::{refuse_unused_flags, CommandName, EvalCommand};

pub fn run(cmd: EvalCommand, given: &BTreeSet<String>) -> Result<ExitCode> {
    let EvalCommand {
        common,
        checkpoint,
        data,
        eval,
    } = cmd;
    // 1. Flags.
    refuse_unused_flags(CommandName::Eval, None, given)?;
    data.check_workers()?;
    common.apply()?;
    // 2. Data.
    let input = evaluate::EvalInput::prepare(&checkpoint, Some(&data), None)?;
    // 3. Device.
    with_backend!(common, |b| {
        // 4. Output directory.
        let _lock = out_dir::lock(&common.out)?;
        // 5. The work.
        let m = evaluate::evaluate(b, &dscl_core::Solo, input, &eval, &common.out)?;
        println!("{}", m.table());
        Ok(())
    })
}
