//! Crash safety at the worst moment: `runtime train` killed with SIGKILL while it is writing a
//! checkpoint. The run on disk keeps its last complete checkpoint (checksum intact), the
//! unfinished temporary file is never taken for a checkpoint and is cleared away by the next
//! run, and for a fixed seed the losses after the resumes equal those of an uninterrupted run.
//! A checkpoint corrupted on disk is refused at `--resume` with an error, before any step.
//!
//! A checkpoint write lasts microseconds on a RAM file system, too short to hit by polling on
//! a loaded machine. So the test makes it wait instead: it plants a named pipe at the path of
//! the child's next temporary checkpoint file. The child's write goes into the pipe and blocks
//! once the pipe's buffer is full; the test reads the first bytes, which proves the write has
//! begun, and kills the child, which cannot have finished it (the rest is never read) and so
//! cannot have renamed the file over the checkpoint. No timing decides the outcome.
#![cfg(unix)]

mod common;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dscl_runtime::io::checkpoint::{temporary_path, Checkpoint};
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

/// What a kill inside a checkpoint write left.
struct InterruptedWrite {
    /// Bytes of the checkpoint the child had written when it was killed.
    bytes_written: usize,
}

/// Reads at most this much of an intercepted checkpoint, well short of a whole one.
const PIPE_READ: usize = 1 << 16;

/// Once the log holds `after_logged_steps` step records, plants a named pipe where `child`
/// writes its next checkpoint, reads the first bytes of that write and kills `child` while
/// it is blocked writing the rest. `None` if the child finished first.
fn kill_inside_a_checkpoint_write(
    mut child: Child,
    out: &Path,
    after_logged_steps: usize,
) -> Option<InterruptedWrite> {
    let tmp = temporary_path(&out.join("stage1.safetensors"), child.id()).unwrap();
    let start = Instant::now();
    // Polling only paces these loops: what they wait for, once it happens, stays so.
    let wait = |child: &mut Child| -> bool {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the run reached no checkpoint write to interrupt in 120 s"
        );
        std::thread::sleep(Duration::from_millis(1));
        child.try_wait().unwrap().is_none()
    };
    while step_records(out).len() < after_logged_steps {
        if !wait(&mut child) {
            return None;
        }
    }
    let c_path = CString::new(tmp.as_os_str().as_bytes()).unwrap();
    loop {
        // SAFETY: `c_path` is a NUL-terminated path that outlives the call.
        if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } == 0 {
            break;
        }
        let error = std::io::Error::last_os_error();
        // The child's own temporary file of a write under way: plant the pipe after it.
        assert_eq!(error.kind(), ErrorKind::AlreadyExists, "mkfifo: {error}");
        if !wait(&mut child) {
            return None;
        }
    }
    // Non-blocking, so the child's open succeeds at once and a child that never writes
    // cannot hang the test.
    let mut pipe = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&tmp)
        .unwrap();
    let mut received = vec![0u8; PIPE_READ];
    let bytes_written = loop {
        match pipe.read(&mut received) {
            Ok(n) if n > 0 => break n,
            // 0: no writer yet; WouldBlock: the writer has opened the pipe, no data yet.
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading the pipe: {e}"),
        }
        if !wait(&mut child) {
            return None;
        }
    };
    // The child is inside the write: a checkpoint is larger than the pipe's buffer and
    // what was read together, so it blocks until more is read, which never happens.
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    Some(InterruptedWrite { bytes_written })
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
    assert!(common::status(command(&reference_dir)).success());
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
            "kill {kill}: inside the checkpoint write of global step {last_logged}, {} bytes \
             into it",
            cut.bytes_written
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
        let size = fs::metadata(ckpt.path()).unwrap().len() as usize;
        assert!(
            size > 2 * PIPE_READ,
            "a {size}-byte checkpoint fits the pipe"
        );
        assert_eq!(
            temporaries(&dir).len(),
            1,
            "kill {kill}: {:?}",
            temporaries(&dir)
        );
    }

    // What a kill inside a write to a disk leaves: the first part of a checkpoint in a
    // regular temporary file, here as if from another process.
    let complete = fs::read(dir.join("stage1.safetensors")).unwrap();
    let partial = temporary_path(&dir.join("stage1.safetensors"), u32::MAX).unwrap();
    fs::write(&partial, &complete[..complete.len() / 2]).unwrap();

    let resumed = common::status({
        let mut c = command(&dir);
        c.arg("--resume");
        c
    });
    assert!(resumed.success(), "the last resume failed");
    assert_eq!(losses(&dir), reference);
    // Each run cleared the temporary file the previous kill left; the last one left none.
    assert!(temporaries(&dir).is_empty(), "{:?}", temporaries(&dir));
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::remove_dir_all(&reference_dir);
}

#[test]
fn resume_refuses_a_corrupt_checkpoint_before_any_step() {
    let dir = temp("corrupt");
    let stopped = common::status({
        let mut c = command(&dir);
        c.args(["--stop-after", "2"]);
        c
    });
    assert!(stopped.success());
    let path = dir.join("stage1.safetensors");
    let mut bytes = fs::read(&path).unwrap();
    let near_the_end = bytes.len() - 5;
    bytes[near_the_end] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let steps_before = step_records(&dir).len();

    let output = common::output_within(
        {
            let mut c = command(&dir);
            c.arg("--resume");
            c
        },
        common::DEADLINE,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}: checkpoint is corrupt", path.display()))
            && stderr.contains("refusing to use it"),
        "{stderr}"
    );
    assert_eq!(step_records(&dir).len(), steps_before, "a step ran");
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "the checkpoint was rewritten"
    );
    let _ = fs::remove_dir_all(&dir);
}
