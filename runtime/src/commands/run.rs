//! `runtime run`: both stages and the evaluation in one go, in phases:
//!
//! 0. with `--distributed`, the cluster (as `train`'s): every stage and the evaluation across
//!    the job's ranks, rank 0 writing; an error on any rank ends every rank;
//! 1. flags: resolved into the run's configuration and checked, unused ones refused,
//!    `--eval-every-epoch` refused where there is no stage 2, `--max-index-mib` put in force;
//! 2. data: the training set indexed and checked, and the test set against its classes, so a
//!    missing or mismatched test set stops the run before hours of training;
//! 3. memory: stage 1's estimate, and stage 2's (none with `--loss ce`), against the machine's
//!    free memory;
//! 4. device: the backend opened;
//! 5. output directory: locked, and claimed for a new run (or the one `--resume` continues);
//! 6. the work: stage 1; stage 2 on its backbone (the cross-entropy baseline is its own
//!    classifier); the classifier evaluated, its tables printed; the plot drawn.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{bail, Result};
use dscl_runtime::config::{LossKind, RunConfig};
use dscl_runtime::data::{open_test, open_train};
use dscl_runtime::evaluate;
use dscl_runtime::io::out_dir::{self, METRICS_FILE, RUN_FILES};
use dscl_runtime::memory;
use dscl_runtime::train::{stage1, stage2};

use super::{on_cluster, plot, replicas_of_the_job};
use crate::cli::{refuse_unused_flags, CommandName, RunCommand};

pub fn run(cmd: RunCommand, given: &BTreeSet<String>) -> Result<ExitCode> {
    let RunCommand {
        common,
        data,
        train,
        linear,
        eval,
        resume,
        overwrite,
        distributed,
    } = cmd;
    // 0. The cluster.
    on_cluster(distributed, common.backend, |cluster| {
        // 1. Flags.
        let mut train = train;
        replicas_of_the_job(cluster, &mut train)?;
        let cfg = RunConfig::resolve(&data, &train, &linear, common.seed)?;
        refuse_unused_flags(CommandName::Run, Some(&cfg), given)?;
        if cfg.loss == LossKind::Ce && linear.eval_every_epoch {
            bail!(
                "--eval-every-epoch evaluates stage-2 epochs; `run --loss ce` has no stage \
             2 (for classifier re-training, run `runtime linear` on its checkpoint)"
            );
        }
        cluster.check_same_settings(&format!(
            "{} out={} resume={resume} overwrite={overwrite} eval_every_epoch={}",
            serde_json::to_string(&cfg)?,
            common.out.display(),
            linear.eval_every_epoch
        ))?;
        common.apply()?;
        // 2. Data.
        let train_set = open_train(&cfg)?;
        let test_set = open_test(&cfg, train_set.num_classes())?;
        // 3. Memory.
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
        // 4. Device.
        with_backend!(common, |b| {
            // 5. Output directory.
            let _lock = match cluster.writes() {
                true => {
                    let lock = out_dir::lock(&out)?;
                    out_dir::claim(&out, RUN_FILES, RUN_FILES, resume, overwrite)?;
                    Some(lock)
                }
                false => None,
            };
            // 6. The work.
            let stage1 = stage1::train(b, cluster, &cfg, train_set.clone(), &out, resume, None)?;
            // Every rank reads the checkpoint rank 0 has just written.
            cluster.barrier()?;
            let (classifier, epochs) = if cfg.loss == LossKind::Ce {
                (stage1, None)
            } else {
                // The data sets and stage 2's memory were checked in phases 2 and 3.
                let input = stage2::Stage2Input::prepare(
                    choice,
                    Some(train_set),
                    Some(test_set.clone()),
                    &stage1,
                    &linear,
                )?;
                let s2 = stage2::train(b, cluster, input, &eval, &out)?;
                cluster.barrier()?;
                (s2.checkpoint, s2.epochs)
            };
            let input = evaluate::EvalInput::prepare(&classifier, Some(&data), Some(test_set))?;
            let m = evaluate::evaluate(b, &cluster.exchange_on(b)?, input, &eval, &out)?;
            // Rank 0 reports and draws.
            if cluster.writes() {
                println!("{}", m.table());
                if let Some(epochs) = &epochs {
                    println!("{}", epochs.best_table());
                }
                match plot::draw(&out) {
                    Ok(p) => eprintln!(
                        "wrote {} and {}",
                        out.join(METRICS_FILE).display(),
                        p.display()
                    ),
                    Err(e) => eprintln!("note: no plot: {e:#}"),
                }
            }
            Ok(())
        })
    })
}
