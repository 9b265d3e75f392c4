//! An output directory that cannot be created, has no room on its file system, or would take
//! a checkpoint larger than the file-size limit is reported by `runtime train` before the
//! first training step, naming the directory and the cause.
//!
//! Tests may run as root, for whom permission bits do not make a directory read-only, so the
//! unwritable directory is one below a regular file (it cannot be created); the full disk is a
//! 1 MiB tmpfs (mounted where the tests may mount, as root in CI), and the file-size limit is
//! `ulimit -f`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{output_within, DEADLINE};
use dscl_runtime::io::out_dir::{self, LOCK_FILE};

const TRAIN: &[&str] = &[
    "train",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--queue",
    "64",
];

fn assert_refused_before_training(output: &Output, out: &Path) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "expected the runtime's error exit; {:?}\n{stderr}",
        output.status
    );
    assert!(
        stderr.contains(&format!("output directory {}", out.display())),
        "the error does not name the output directory:\n{stderr}"
    );
    // The log is opened when the first epoch starts; no log means no step ran.
    assert!(!out.join("log.jsonl").exists());
    assert!(!out.join("stage1.safetensors").exists());
    assert!(!stderr.contains("epoch 1/1"), "{stderr}");
}

/// The files left in `out`: only the lock file (a few bytes; removing it would let a second
/// run lock a file the first no longer holds), no probe.
fn assert_only_the_lock_file_left(out: &Path) {
    let left: Vec<_> = fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [LOCK_FILE], "{left:?}");
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` reads it) on `at`; the reason when this
    /// system or user cannot.
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let mut c = Command::new("mount");
        c.args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at);
        let o = c.output().map_err(|e| format!("running mount: {e}"))?;
        if o.status.success() {
            Ok(Tmpfs(at.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn train(out: &Path) -> Command {
    let mut c = common::runtime_command();
    c.args(TRAIN).arg("--out").arg(out);
    c
}

/// The same under a file-size limit of `blocks` (`ulimit -f`: 512-byte or 1 KiB blocks,
/// depending on the shell).
#[cfg(unix)]
fn train_under_ulimit(out: &Path, blocks: u32) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("ulimit -f {blocks} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_runtime"))
        .args(TRAIN)
        .arg("--out")
        .arg(out)
        .env("RAYON_NUM_THREADS", "2");
    c
}

/// Each cause, refused before training with the directory and the cause named: a directory
/// that cannot be created (below a regular file), a file-size limit below a checkpoint (200
/// blocks, 100 or 200 KiB, against the digits model's checkpoints of about 300 KiB), and a
/// file system without room for the checkpoints (a 1 MiB tmpfs against two checkpoints and a
/// margin, about 1.6 MiB).
#[test]
fn an_unusable_output_directory_is_refused_before_training_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();

    let file = dir.path().join("a-file");
    fs::write(&file, "not a directory").unwrap();
    let out = file.join("run");
    let output = output_within(train(&out), DEADLINE);
    assert_refused_before_training(&output, &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("creating the output directory"), "{stderr}");
    assert!(stderr.contains("Not a directory"), "{stderr}");

    #[cfg(unix)]
    {
        let out = dir.path().join("limited");
        let output = output_within(train_under_ulimit(&out, 200), DEADLINE);
        assert_refused_before_training(&output, &out);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("the file-size limit (ulimit -f) is 0.1 MiB")
                || stderr.contains("the file-size limit (ulimit -f) is 0.2 MiB"),
            "{stderr}"
        );
        assert!(
            stderr.contains("MiB a checkpoint in the output directory"),
            "{stderr}"
        );
        assert_only_the_lock_file_left(&out);
    }

    match Tmpfs::mount(&dir.path().join("small-disk"), "1m") {
        Ok(disk) => {
            let out = disk.0.join("run");
            let output = output_within(train(&out), DEADLINE);
            assert_refused_before_training(&output, &out);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains(&format!(
                    "the output directory {} has 1.0 MiB free, below the",
                    out.display()
                )),
                "{stderr}"
            );
            assert!(stderr.contains("MiB its checkpoints need"), "{stderr}");
            assert_only_the_lock_file_left(&out);
        }
        Err(reason) => eprintln!("skipped: cannot mount a tmpfs here: {reason}"),
    }
}

fn runtime(args: &[&str], out: &Path) -> Output {
    let mut c = common::runtime_command();
    c.args(args).arg("--out").arg(out);
    output_within(c, DEADLINE)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Each stage-1 step record of the log: (global step, loss).
fn logged_steps(out: &Path) -> Vec<(u64, f64)> {
    stage1_records(out)
        .into_iter()
        .filter(|(kind, _, _)| kind == "step")
        .map(|(_, step, loss)| (step, loss))
        .collect()
}

/// Each stage-1 record of the log: (kind, global step or epochs done, loss).
fn stage1_records(out: &Path) -> Vec<(String, u64, f64)> {
    fs::read_to_string(out.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["phase"] == "stage1")
        .map(|v| {
            let kind = v["kind"].as_str().unwrap().to_string();
            let at = if kind == "step" {
                &v["global_step"]
            } else {
                &v["epoch"]
            };
            (kind, at.as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// One owner per output directory: while a run holds it, `train`, `run`, `linear` and `eval`
/// on it are refused with the holder's process id, before any work. (`linear` and `eval` read
/// their checkpoint and data before they turn to the output directory, so each is given a
/// real one: a stage-1 checkpoint, and the classifier of a cross-entropy run.)
#[test]
fn a_directory_in_use_is_refused_with_the_owner_pid() {
    let dir = tempfile::tempdir().unwrap();
    let trained = dir.path().join("trained");
    let o = runtime(TRAIN, &trained);
    assert!(o.status.success(), "{}", text(&o));
    let stage1 = trained.join("stage1.safetensors");
    let stage1 = stage1.to_str().unwrap();
    let baseline = dir.path().join("ce");
    let o = runtime(&["train", "--loss", "ce", "--epochs", "1"], &baseline);
    assert!(o.status.success(), "{}", text(&o));
    let classifier = baseline.join("stage1.safetensors");
    let classifier = classifier.to_str().unwrap();
    let out = dir.path().join("run");
    let _held = out_dir::lock(&out).unwrap();
    let owner = format!("in use by another run (process {})", std::process::id());
    for args in [
        TRAIN,
        &["run", "--epochs", "1"][..],
        &["linear", "--checkpoint", stage1][..],
        &["eval", "--checkpoint", classifier][..],
    ] {
        let o = runtime(args, &out);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(&owner), "{args:?}: {}", text(&o));
        assert!(!out.join("log.jsonl").exists(), "{args:?} started work");
    }
}

/// A directory that holds a run is not trained into again by accident: without --resume a
/// second `train` or `run` is refused unless --overwrite replaces the old run (whose log then
/// holds only the new run's records); --resume with --overwrite is refused as contradictory;
/// a second `linear` into a directory holding a classifier needs --overwrite too.
#[test]
fn a_directory_holding_a_run_needs_resume_or_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = runtime(TRAIN, &out);
    assert!(o.status.success(), "{}", text(&o));
    let first = logged_steps(&out);
    // 503 training images in batches of 32, the last partial batch dropped.
    assert_eq!(first.len(), 503 / 32, "{first:?}");

    for args in [TRAIN, &["run", "--epochs", "1", "--batch-size", "32"][..]] {
        let o = runtime(args, &out);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("holds a run"), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("--overwrite"), "{args:?}: {}", text(&o));
    }
    let mut both = TRAIN.to_vec();
    both.extend_from_slice(&["--resume", "--overwrite"]);
    let o = runtime(&both, &out);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("give one"), "{}", text(&o));
    assert_eq!(
        logged_steps(&out),
        first,
        "a refused command changed the log"
    );

    let mut again = TRAIN.to_vec();
    again.extend_from_slice(&["--overwrite", "--seed", "1"]);
    let o = runtime(&again, &out);
    assert!(o.status.success(), "{}", text(&o));
    let second = logged_steps(&out);
    assert_eq!(second.len(), first.len(), "old records stayed: {second:?}");
    assert_ne!(second, first);

    let checkpoint = out.join("stage1.safetensors");
    let linear = [
        "linear",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--linear-epochs",
        "1",
    ];
    let o = runtime(&linear, &out);
    assert!(o.status.success(), "{}", text(&o));
    let o = runtime(&linear, &out);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("linear.safetensors"), "{}", text(&o));
    let mut replace = linear.to_vec();
    replace.push("--overwrite");
    let o = runtime(&replace, &out);
    assert!(o.status.success(), "{}", text(&o));
    let log = fs::read_to_string(out.join("log.jsonl")).unwrap();
    let linear_epochs = log
        .lines()
        .filter(|l| l.contains(r#""phase":"linear""#) && l.contains(r#""kind":"epoch""#))
        .count();
    assert_eq!(
        linear_epochs, 1,
        "the first stage 2's records stayed:\n{log}"
    );
}

/// A resumed run continues its log from the checkpoint's step: records an interrupted attempt
/// wrote after its last checkpoint (and a line a kill cut short) are dropped, so every step
/// appears once, with the losses of an uninterrupted run.
#[test]
fn a_resumed_log_has_every_step_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut two_epochs = TRAIN.to_vec();
    two_epochs[2] = "2"; // --epochs
    let whole = dir.path().join("whole");
    let o = runtime(&two_epochs, &whole);
    assert!(o.status.success(), "{}", text(&o));
    let reference = stage1_records(&whole);
    assert_eq!(reference.len(), 2 * 15 + 2, "{reference:?}");

    // Stopped mid-epoch (step 4) and at an epoch's end (step 15, its epoch record written).
    for stop in ["4", "15"] {
        let parts = dir.path().join(format!("parts-{stop}"));
        let mut first = two_epochs.clone();
        first.extend_from_slice(&["--stop-after", stop]);
        let o = runtime(&first, &parts);
        assert!(o.status.success(), "{}", text(&o));
        // What an attempt killed two steps later, mid-record, leaves behind.
        let next: u64 = stop.parse().unwrap();
        let mut log = fs::read_to_string(parts.join("log.jsonl")).unwrap();
        for step in [next + 1, next + 2] {
            log.push_str(&format!(
                r#"{{"kind":"step","phase":"stage1","global_step":{step},"loss":1.0}}"#
            ));
            log.push('\n');
        }
        log.push_str(r#"{"kind":"st"#);
        fs::write(parts.join("log.jsonl"), log).unwrap();
        let mut resume = two_epochs.clone();
        resume.push("--resume");
        let o = runtime(&resume, &parts);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(stage1_records(&parts), reference, "stopped after {stop}");
    }
}
