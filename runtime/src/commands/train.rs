//! `runtime train`: stage 1, in phases:
//!
//! 0. with `--distributed`, the cluster: this process joins its MPI job as one rank (one
//!    replica group of every batch); from here on an error on any rank ends every rank;
//! 1. flags: resolved into the run's configuration and checked, unused ones refused,
//!    `--stop-after` checked, `--max-index-mib` put in force; every rank's settings compared
//!    with rank 0's;
//! 2. data: the training set indexed and checked;
//! 3. memory: stage 1's estimate against the machine's free memory;
//! 4. device: the backend opened;
//! 5. output directory (rank 0): locked, and claimed for a new run (or the one `--resume`
//!    continues);
//! 6. the work: stage 1, checkpointed into `OUT/stage1.safetensors`.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{bail, Result};
use dscl_runtime::cluster::Cluster;
use dscl_runtime::config::{LinearArgs, RunConfig};
use dscl_runtime::data::open_train;
use dscl_runtime::io::out_dir::{self, RUN_FILES};
use dscl_runtime::memory;
use dscl_runtime::train::stage1;

use super::{on_cluster, replicas_of_the_job};
use crate::cli::{refuse_unused_flags, CommandName, TrainCommand};

pub fn run(cmd: TrainCommand, given: &BTreeSet<String>) -> Result<ExitCode> {
    let TrainCommand {
        common,
        data,
        train,
        resume,
        overwrite,
        stop_after,
        distributed,
    } = cmd;
    // 0. The cluster.
    on_cluster(distributed, common.backend, |cluster| {
        // 1. Flags.
        let mut train = train;
        replicas_of_the_job(cluster, &mut train)?;
        let cfg = RunConfig::resolve(&data, &train, &LinearArgs::default(), common.seed)?;
        refuse_unused_flags(CommandName::Train, Some(&cfg), given)?;
        if stop_after == Some(0) {
            bail!("--stop-after must be at least 1");
        }
        cluster.check_same_settings(&format!(
            "{} out={} resume={resume} overwrite={overwrite} stop_after={stop_after:?}",
            serde_json::to_string(&cfg)?,
            common.out.display()
        ))?;
        common.apply()?;
        work(cluster, &common, &cfg, resume, overwrite, stop_after)
    })
}

/// Phases 2-6.
fn work(
    cluster: &Cluster,
    common: &crate::cli::Common,
    cfg: &RunConfig,
    resume: bool,
    overwrite: bool,
    stop_after: Option<u64>,
) -> Result<ExitCode> {
    // 2. Data.
    let train_set = open_train(cfg)?;
    // 3. Memory.
    memory::check_on(
        &memory::estimate(cfg, train_set.num_classes())?,
        common.backend,
    )?;
    // 4. Device.
    with_backend!(common, |b| {
        // 5. Output directory.
        let _lock = match cluster.writes() {
            true => {
                let lock = out_dir::lock(&common.out)?;
                out_dir::claim(&common.out, RUN_FILES, RUN_FILES, resume, overwrite)?;
                Some(lock)
            }
            false => None,
        };
        // 6. The work.
        let path = stage1::train(b, cluster, cfg, train_set, &common.out, resume, stop_after)?;
        if cluster.writes() {
            eprintln!("wrote {}", path.display());
        }
        Ok(())
    })
}
