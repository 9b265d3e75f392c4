//! Crash safety at the worst moment: `runtime train` killed with SIGKILL while it is writing a
//! checkpoint. The run on disk keeps its last complete checkpoint (checksum intact), the
//! unfinished temporary file is never taken for a checkpoint and is cleared away by the next
//! run, and for a fixed seed the losses after the resumes equal those of an uninterrupted run.
//!
//! Landing a kill inside a write that takes milliseconds is not left to timing: the test waits
//! until the child's temporary checkpoint file appears, freezes the child with SIGSTOP, and
//! once the kernel reports it stopped, looks again. If the temporary file is still there, the
//! frozen process is between creating it and renaming it, and SIGKILL lands mid-write; if the
//! rename already happened, the child is resumed with SIGCONT and the next write is tried.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dscl_runtime::checkpoint::{temporary_path, Checkpoint};
use serde_json::Value;

const ARGS: &[&str] = &[
    "train",
    "--epochs",
    "2",
    "--batch-size",
    "32",
    "--queue",
    "64",
    "--crops",
    "2",
    "--checkpoint-every",
    "1",
    "--workers",
    "2",
];

/// Cumulative numbers of step records in the log (over all the runs, steps taken again after
/// a resume included) after which the next checkpoint write is interrupted. The second lands
/// around the end of the first epoch, the third in the second.
const KILL_AFTER_LOGGED_STEPS: [usize; 3] = [3, 14, 24];

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dscl-crash-ckpt-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn command(out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runtime"));
    c.args(ARGS)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn step_records(out: &Path) -> Vec<Value> {
    fs::read_to_string(out.join("log.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["kind"] == "step")
        .collect()
}

/// Loss per global step; a later record of the same step (after a resume) wins.
fn losses(out: &Path) -> BTreeMap<u64, f64> {
    step_records(out)
        .iter()
        .map(|v| {
            (
                v["global_step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: plain system call on the process id of a child this test started and has not
    // yet waited for, so the id cannot have been reused.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({}, {signal}) failed", child.id());
}

/// Freezes `child` and returns once every thread of it has stopped; `false` if it exited
/// first. WNOWAIT leaves the child's state to `Child::wait`.
fn freeze(child: &Child) -> bool {
    signal(child, libc::SIGSTOP);
    // SAFETY: `info` is a plain C struct the call fills in; the id is our unwaited child's.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            child.id() as libc::id_t,
            &mut info,
            libc::WSTOPPED | libc::WEXITED | libc::WNOWAIT,
        )
    };
    assert_eq!(rc, 0, "waitid: {}", std::io::Error::last_os_error());
    info.si_code == libc::CLD_STOPPED
}

/// What a kill that landed inside a checkpoint write left.
struct InterruptedWrite {
    /// Checkpoint writes the child completed while the test was looking for one to cut.
    writes_missed: usize,
    leftover_bytes: u64,
}

/// Waits until the log holds `after_logged_steps` step records, then kills `child` inside
/// the next checkpoint write it can catch. `None` if the child finished first.
fn kill_inside_a_checkpoint_write(
    mut child: Child,
    out: &Path,
    after_logged_steps: usize,
) -> Option<InterruptedWrite> {
    let tmp = temporary_path(&out.join("stage1.safetensors"), child.id()).unwrap();
    let start = Instant::now();
    let mut writes_missed = 0;
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint write of the run could be interrupted in 120 s"
        );
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        if !tmp.exists() || step_records(out).len() < after_logged_steps {
            std::thread::yield_now();
            continue;
        }
        if !freeze(&child) {
            child.wait().unwrap();
            return None;
        }
        if tmp.exists() {
            signal(&child, libc::SIGKILL);
            child.wait().unwrap();
            let leftover_bytes = fs::metadata(&tmp).unwrap().len();
            return Some(InterruptedWrite {
                writes_missed,
                leftover_bytes,
            });
        }
        writes_missed += 1;
        signal(&child, libc::SIGCONT);
    }
}

fn temporaries(out: &Path) -> Vec<String> {
    fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

#[test]
fn sigkill_inside_checkpoint_writes_then_resume_matches_an_uninterrupted_run() {
    let reference_dir = temp("reference");
    assert!(command(&reference_dir).status().unwrap().success());
    let reference = losses(&reference_dir);
    assert!(reference.len() >= 25, "{}", reference.len());
    assert!(temporaries(&reference_dir).is_empty());

    let dir = temp("killed");
    for (kill, &after) in KILL_AFTER_LOGGED_STEPS.iter().enumerate() {
        let mut run = command(&dir);
        if kill > 0 {
            run.arg("--resume");
        }
        let cut = kill_inside_a_checkpoint_write(run.spawn().unwrap(), &dir, after)
            .unwrap_or_else(|| panic!("kill {kill}: the run ended before a write was cut"));
        let records = step_records(&dir);
        let last_logged = records.last().unwrap()["global_step"].as_u64().unwrap();
        eprintln!(
            "kill {kill}: inside the write after global step {last_logged} ({} bytes of the \
             temporary file written; {} complete writes passed first)",
            cut.leftover_bytes, cut.writes_missed
        );
        // The step is logged before its checkpoint is written, so the cut write was that of
        // the last logged step and the checkpoint on disk is the complete one before it.
        let ckpt = Checkpoint::read(&dir.join("stage1.safetensors"))
            .unwrap_or_else(|e| panic!("kill {kill}: the checkpoint on disk is unusable: {e:#}"));
        assert_eq!(
            ckpt.meta("global_step").unwrap(),
            (last_logged - 1).to_string(),
            "kill {kill}"
        );
        assert_eq!(
            temporaries(&dir).len(),
            1,
            "kill {kill}: {:?}",
            temporaries(&dir)
        );
    }

    let resumed = command(&dir).arg("--resume").status().unwrap();
    assert!(resumed.success(), "the last resume failed");
    assert_eq!(losses(&dir), reference);
    // Each run cleared the temporary file the previous kill left; the last one left none.
    assert!(temporaries(&dir).is_empty(), "{:?}", temporaries(&dir));
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::remove_dir_all(&reference_dir);
}
