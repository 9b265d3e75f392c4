//! What the command-line tests share: running the `runtime` binary under a deadline, so a test
//! that would hang fails instead, naming the command and what it printed.

#![allow(dead_code)] // each test binary uses part of it

use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use wait_timeout::ChildExt;

/// The longest any single command of these tests may take; the slowest (a short `run` on the
/// digits in a debug build on two busy cores) takes well under a minute.
pub const DEADLINE: Duration = Duration::from_secs(300);

/// The `runtime` binary with two compute threads, as the tests run it.
pub fn runtime_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runtime"));
    c.env("RAYON_NUM_THREADS", "2");
    c
}

/// Runs `runtime ARGS` to its end under [`DEADLINE`].
pub fn runtime<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let mut c = runtime_command();
    c.args(args);
    output_within(c, DEADLINE)
}

/// Runs `command` with its output captured; a command still running after `limit` is killed
/// and the test fails with what it had printed.
pub fn output_within(mut command: Command, limit: Duration) -> Output {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {shown}: {e}"));
    let (stdout, stderr) = drain(&mut child);
    let status = wait_within(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (out, err) = (join(stdout), join(stderr));
    match status {
        Some(status) => Output {
            status,
            stdout: out,
            stderr: err,
        },
        None => panic!(
            "{shown} did not end within {limit:?}; it printed:\n{}{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        ),
    }
}

/// Runs `command` to its end under [`DEADLINE`] and returns its exit status (its output is
/// captured, and shown if the deadline passes).
pub fn status(command: Command) -> ExitStatus {
    output_within(command, DEADLINE).status
}

/// Waits for `child` at most `limit`; `None` if it is still running.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    child.wait_timeout(limit).expect("waiting for the child")
}

/// Reads the child's piped outputs on threads of their own, so a chatty child never blocks on
/// a full pipe while it is waited for.
fn drain(child: &mut Child) -> (JoinHandle<Vec<u8>>, JoinHandle<Vec<u8>>) {
    fn reader<R: Read + Send + 'static>(source: Option<R>) -> JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut s) = source {
                let _ = s.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    (reader(child.stdout.take()), reader(child.stderr.take()))
}

fn join(handle: JoinHandle<Vec<u8>>) -> Vec<u8> {
    handle.join().unwrap_or_default()
}

/// Standard output and standard error, in that order, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts that a command was refused with the runtime's error exit (2) and that its message
/// contains every one of `needles`.
pub fn assert_refused(o: &Output, needles: &[&str]) {
    let all = text(o);
    assert_eq!(o.status.code(), Some(2), "expected exit 2:\n{all}");
    assert!(!all.contains("panicked"), "a panic, not an error:\n{all}");
    for n in needles {
        assert!(all.contains(n), "the error lacks {n:?}:\n{all}");
    }
}

/// The losses of `phase`'s steps in `out/log.jsonl`, in order.
pub fn step_losses(out: &Path, phase: &str) -> Vec<f64> {
    std::fs::read_to_string(out.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "step" && v["phase"] == phase)
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}
