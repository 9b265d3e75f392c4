//! Crash safety: `runtime train` killed with SIGKILL in the middle of an epoch resumes from
//! its last complete checkpoint, and for a fixed seed the losses after the resume equal those
//! of an uninterrupted run.

mod common;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const ARGS: &[&str] = &[
    "train",
    "--epochs",
    "3",
    "--batch-size",
    "32",
    "--queue",
    "64",
    "--crops",
    "2",
    "--checkpoint-every",
    "4",
    "--workers",
    "2",
];

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dscl-crash-{name}-{}", std::process::id()));
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

/// Loss per global step; a later record of the same step (after a resume) wins, and a line
/// cut short by the kill is ignored.
fn losses(out: &Path) -> BTreeMap<u64, f64> {
    let mut by_step = BTreeMap::new();
    for line in fs::read_to_string(out.join("log.jsonl")).unwrap().lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["kind"] == "step" {
            by_step.insert(
                v["global_step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
            );
        }
    }
    by_step
}

fn logged_steps(out: &Path) -> usize {
    fs::read_to_string(out.join("log.jsonl"))
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("\"kind\":\"step\""))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run() {
    let reference_dir = temp("reference");
    assert!(common::status(command(&reference_dir)).success());
    let reference = losses(&reference_dir);
    assert!(reference.len() >= 40, "{}", reference.len());

    for kill_after in [6usize, 21] {
        let dir = temp(&format!("killed{kill_after}"));
        let mut child = command(&dir).spawn().unwrap();
        let start = Instant::now();
        while logged_steps(&dir) < kill_after {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the run did not reach step {kill_after}"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before the kill"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        // Whatever the kill interrupted, the checkpoint on disk is a complete one.
        assert!(dir.join("stage1.safetensors").exists());
        let status = common::status({
            let mut c = command(&dir);
            c.arg("--resume");
            c
        });
        assert!(
            status.success(),
            "resume after a kill at step {kill_after} failed"
        );
        assert_eq!(losses(&dir), reference, "kill at step {kill_after}");
        // A temporary file the kill may have left behind was removed by the resumed run.
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

/// Waits until `signal` is no longer pending for process `pid` (its handler has run), as
/// `/proc/PID/status` shows in the masks of pending signals (SigPnd for the thread, ShdPnd for
/// the process). A process that has ended has nothing pending.
fn wait_until_delivered(pid: i32, signal: i32) {
    let bit = 1u64 << (signal - 1);
    let start = Instant::now();
    loop {
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            return;
        };
        let pending = status
            .lines()
            .filter(|l| l.starts_with("SigPnd:") || l.starts_with("ShdPnd:"))
            .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
            .fold(0, |mask, m| mask | m);
        if pending & bit == 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "signal {signal} still pending after 60 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Starts the run with stderr captured, waits until it has logged `steps` steps, sends each of
/// `signals` in turn (each once the one before was delivered), and returns its exit status and
/// stderr.
fn signalled(out: &Path, steps: usize, signals: &[i32]) -> (std::process::ExitStatus, String) {
    let mut child = command(out).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while logged_steps(out) < steps {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the run did not reach step {steps}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the signal"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = i32::try_from(child.id()).unwrap();
    for &signal in signals {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        // Standard signals do not queue: a second one sent while the first is still pending
        // (the child not yet scheduled, as on a loaded machine) merges with it. Each is sent
        // only once the one before has been delivered.
        wait_until_delivered(pid, signal);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not stop after the signal"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

/// Graceful preemption: SIGTERM or SIGINT ends the run after its current step with a checkpoint
/// at that step, the command that resumes it, and exit status 128 + signal; resuming with the
/// printed command gives the uninterrupted run's losses. A second signal ends the run at once
/// (killed by the signal), and the checkpoint on disk is still a complete one to resume from.
#[test]
fn sigterm_and_sigint_stop_after_a_step_with_a_checkpoint_and_the_resume_command() {
    use std::os::unix::process::ExitStatusExt;

    let reference_dir = temp("signal-reference");
    assert!(common::status(command(&reference_dir)).success());
    let reference = losses(&reference_dir);

    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let dir = temp(&format!("signal{signal}"));
        let (status, stderr) = signalled(&dir, 6, &[signal]);
        assert_eq!(status.code(), Some(code), "{stderr}");
        let saved = dscl_runtime::io::checkpoint::Checkpoint::read(&dir.join("stage1.safetensors"))
            .unwrap();
        let saved_step: usize = saved.meta("global_step").unwrap().parse().unwrap();
        // The step under way when the signal came was finished, logged and saved.
        assert_eq!(saved_step, losses(&dir).len(), "{stderr}");
        let resume = stderr
            .lines()
            .find_map(|l| l.strip_prefix("resume with: "))
            .unwrap_or_else(|| panic!("no resume command:\n{stderr}"));
        assert!(resume.ends_with("--resume"), "{resume}");
        let words = shlex::split(resume).unwrap();
        let mut again = Command::new(&words[0]);
        again.args(&words[1..]);
        let status = common::status(again);
        assert!(status.success(), "{resume}");
        assert_eq!(losses(&dir), reference, "after {signal}");
    }

    let dir = temp("signal-twice");
    let (status, stderr) = signalled(&dir, 6, &[libc::SIGTERM, libc::SIGTERM]);
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}\n{stderr}");
    let status = common::status({
        let mut c = command(&dir);
        c.arg("--resume");
        c
    });
    assert!(status.success());
    assert_eq!(losses(&dir), reference, "after two signals");
}
