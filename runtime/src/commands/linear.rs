//! `runtime linear`: stage 2 on a stage-1 checkpoint, in phases:
//!
//! 0. with `--distributed`, the cluster (as `train`'s): an error on any rank ends every rank;
//! 1. flags: the stage-2 values checked, unused ones refused, `--max-index-mib` put in force;
//! 2. data and memory: the checkpoint read, the training set it names indexed and checked,
//!    and the memory stage 2 needs checked against it;
//! 3. device: the backend opened;
//! 4. output directory (rank 0): locked, and claimed for a new classifier;
//! 5. the work: stage 2 trained, `OUT/linear.safetensors` written; with `--eval-every-epoch`,
//!    the final model's metrics and the best epoch's printed.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Result;
use dscl_runtime::io::out_dir::{self, EPOCHS_FILE, LINEAR_FILE};
use dscl_runtime::train::stage2;

use super::on_cluster;
use crate::cli::{refuse_unused_flags, CommandName, LinearCommand};

pub fn run(cmd: LinearCommand, given: &BTreeSet<String>) -> Result<ExitCode> {
    let LinearCommand {
        common,
        checkpoint,
        linear,
        eval,
        overwrite,
        distributed,
    } = cmd;
    // 0. The cluster.
    on_cluster(distributed, common.backend, |cluster| {
        // 1. Flags.
        linear.check()?;
        refuse_unused_flags(CommandName::Linear, None, given)?;
        common.apply()?;
        // 2. Data and memory.
        let input = stage2::Stage2Input::prepare(common.backend, None, None, &checkpoint, &linear)?;
        cluster.check_same_settings(&format!(
            "{} checkpoint={} out={} overwrite={overwrite}",
            serde_json::to_string(input.config())?,
            checkpoint.display(),
            common.out.display()
        ))?;
        // 3. Device.
        with_backend!(common, |b| {
            // 4. Output directory.
            let _lock = match cluster.writes() {
                true => {
                    let lock = out_dir::lock(&common.out)?;
                    out_dir::claim(
                        &common.out,
                        &[LINEAR_FILE],
                        &[LINEAR_FILE, EPOCHS_FILE],
                        false,
                        overwrite,
                    )?;
                    Some(lock)
                }
                false => None,
            };
            // 5. The work.
            let s2 = stage2::train(b, cluster, input, &eval, &common.out)?;
            if cluster.writes() {
                eprintln!("wrote {}", s2.checkpoint.display());
                if let (Some(m), Some(epochs)) = (&s2.final_metrics, &s2.epochs) {
                    println!("{}", m.table());
                    println!("{}", epochs.best_table());
                }
            }
            Ok(())
        })
    })
}
