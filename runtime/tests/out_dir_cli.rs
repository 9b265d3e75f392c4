//! An output directory that cannot be created or has no room is reported by `runtime train`
//! before the first training step, naming the directory.
//!
//! Tests may run as root, for whom permission bits do not make a directory read-only, so the
//! unwritable directory is one below a regular file (it cannot be created), and the full disk
//! is a file-size limit (`ulimit -f`): writing the room probe past it fails with EFBIG.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

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

#[test]
fn an_output_directory_that_cannot_be_created_is_reported_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    fs::write(&file, "not a directory").unwrap();
    let out = file.join("run");
    let output = Command::new(env!("CARGO_BIN_EXE_runtime"))
        .args(TRAIN)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_refused_before_training(&output, &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("creating the output directory"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn an_output_directory_without_room_for_a_checkpoint_is_reported_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // 200 blocks (100 or 200 KiB, depending on the shell's block size) is less than the
    // probe, which needs room for two checkpoints of this model (about 300 KiB each).
    let output = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 200 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_runtime"))
        .args(TRAIN)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_refused_before_training(&output, &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MiB free for checkpoints"), "{stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");
    // The probe does not stay behind to fill the disk further.
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
}
