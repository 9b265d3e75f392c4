//! `runtime run`: both stages and the evaluation in one go, in phases:
//!
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
use dscl_runtime::cluster::Cluster;
use dscl_runtime::config::{LossKind, RunConfig};
use dscl_runtime::data::{open_test, open_train};
use dscl_runtime::evaluate;
use dscl_runtime::io::out_dir::{self, METRICS_FILE, RUN_FILES};
use dscl_runtime::memory;
use dscl_runtime::train::{stage1, stage2};

use super::plot;
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
    } = cmd;
    // 1. Flags.
    let cfg = RunConfig::resolve(&data, &train, &linear, common.seed)?;
    refuse_unused_flags(CommandName::Run, Some(&cfg), given)?;
    if cfg.loss == LossKind::Ce && linear.eval_every_epoch {
        bail!(
            "--eval-every-epoch evaluates stage-2 epochs; `run --loss ce` has no stage \
             2 (for classifier re-training, run `runtime linear` on its checkpoint)"
        );
    }
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
        let _lock = out_dir::lock(&out)?;
        out_dir::claim(&out, RUN_FILES, RUN_FILES, resume, overwrite)?;
        // 6. The work.
        let stage1 = stage1::train(
            b,
            &Cluster::Solo,
            &cfg,
            train_set.clone(),
            &out,
            resume,
            None,
        )?;
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
            let s2 = stage2::train(b, input, &eval, &out)?;
            (s2.checkpoint, s2.epochs)
        };
        let input = evaluate::EvalInput::prepare(&classifier, Some(&data), Some(test_set))?;
        let m = evaluate::evaluate(b, input, &eval, &out)?;
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
        Ok(())
    })
}
