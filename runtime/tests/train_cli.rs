//! `runtime train / linear / eval / run` end to end on small data: outputs, exact resume,
//! and the errors a user sees on bad input.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use dscl_runtime::io::checkpoint::Checkpoint;
use serde_json::Value;

mod common;
use common::{runtime, step_losses, text};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dscl-train-cli-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Tiny settings that keep each command to a second or two.
const QUICK: &[&str] = &[
    "--epochs",
    "2",
    "--batch-size",
    "32",
    "--queue",
    "64",
    "--crops",
    "2",
    "--linear-epochs",
    "1",
];

#[test]
fn run_on_the_builtin_digits_writes_metrics_checkpoints_and_plot() {
    let out = temp("run");
    let mut args = vec!["run", "--out", out.to_str().unwrap()];
    args.extend_from_slice(QUICK);
    let o = runtime(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("top-1"), "{}", text(&o));
    let m: Value =
        serde_json::from_str(&fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    for key in [
        "top1",
        "top5",
        "many",
        "medium",
        "few",
        "per_class",
        "class_counts",
    ] {
        assert!(m.get(key).is_some(), "metrics.json lacks {key}: {m}");
    }
    assert!(top5_at_least_top1(&m), "{m}");
    assert_eq!(m["per_class"].as_array().unwrap().len(), 10);
    // Without --eval-every-epoch, stage 2 evaluates nothing.
    assert!(!out.join("linear_epochs.json").exists());
    assert!(
        !text(&o).contains("selected on the test set"),
        "{}",
        text(&o)
    );
    assert_eq!(m["class_counts"][0], 124);
    for f in [
        "stage1.safetensors",
        "linear.safetensors",
        "plot.svg",
        "log.jsonl",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // eval again from the classifier checkpoint gives the same numbers.
    let again = temp("eval");
    let o = runtime(&[
        "eval",
        "--checkpoint",
        out.join("linear.safetensors").to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let m2: Value =
        serde_json::from_str(&fs::read_to_string(again.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["top1"], m2["top1"]);
}

fn top5_at_least_top1(m: &Value) -> bool {
    let (top1, top5) = (m["top1"].as_f64().unwrap(), m["top5"].as_f64().unwrap());
    (0.0..=100.0).contains(&top1) && top5 >= top1 && top5 <= 100.0
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn eval_every_epoch_records_each_epoch_and_the_best_selected_on_the_test_set() {
    let out = temp("every-epoch");
    let mut args = vec!["run", "--out", out.to_str().unwrap(), "--eval-every-epoch"];
    args.extend_from_slice(&QUICK[..8]);
    args.extend_from_slice(&["--linear-epochs", "3"]);
    let o = runtime(&args);
    assert!(o.status.success(), "{}", text(&o));
    let e = read_json(&out.join("linear_epochs.json"));
    assert_eq!(e["selected_on"], "test set", "{e}");
    let epochs = e["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3, "{e}");
    let top1: Vec<f64> = epochs.iter().map(|r| r["top1"].as_f64().unwrap()).collect();
    for (i, r) in epochs.iter().enumerate() {
        assert_eq!(r["epoch"], i + 1);
        assert!(r["loss"].as_f64().is_some_and(f64::is_finite), "{r}");
        assert!(top5_at_least_top1(r), "{r}");
    }
    // The best epoch is the first of the highest top-1, with its whole table.
    let best = top1.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let first = top1.iter().position(|&t| t == best).unwrap() + 1;
    assert_eq!(e["best_epoch"], first, "{e}");
    assert_eq!(e["best"]["top1"], best, "{e}");
    assert_eq!(e["best"]["per_class"].as_array().unwrap().len(), 10);
    // The headline stays the final model's, equal to the last epoch's evaluation; the best
    // epoch's table follows, labelled.
    let m = read_json(&out.join("metrics.json"));
    assert_eq!(m["top1"], epochs[2]["top1"], "{m}");
    assert_eq!(m["top5"], epochs[2]["top5"], "{m}");
    let printed = String::from_utf8_lossy(&o.stdout).to_string();
    let headline = printed.find("top-1").unwrap();
    let labelled = printed
        .find(&format!(
            "best stage-2 epoch {first} of 3, selected on the test set"
        ))
        .unwrap_or_else(|| panic!("{printed}"));
    assert!(headline < labelled, "{printed}");
    // No stage 2 to evaluate with --loss ce.
    let o = runtime(&[
        "run",
        "--loss",
        "ce",
        "--eval-every-epoch",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("runtime linear"), "{}", text(&o));
}

#[test]
fn linear_retrains_the_classifier_of_a_cross_entropy_run() {
    // cRT (Kang et al., ICLR 2020): stage 2 on the backbone of a --loss ce run.
    let ce = temp("ce");
    let mut args = vec!["train", "--loss", "ce", "--out", ce.to_str().unwrap()];
    args.extend_from_slice(&QUICK[..4]); // epochs, batch
    let o = runtime(&args);
    assert!(o.status.success(), "{}", text(&o));
    let crt = temp("crt");
    let ckpt = ce.join("stage1.safetensors");
    let o = runtime(&[
        "linear",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--out",
        crt.to_str().unwrap(),
        "--linear-epochs",
        "2",
        "--eval-every-epoch",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("classifier re-training"), "{}", text(&o));
    let printed = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        printed.contains("top-1") && printed.contains("top-5"),
        "{printed}"
    );
    assert!(printed.contains("selected on the test set"), "{printed}");
    let m = read_json(&crt.join("metrics.json"));
    assert!(top5_at_least_top1(&m), "{m}");
    assert_eq!(
        read_json(&crt.join("linear_epochs.json"))["epochs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The classifier checkpoint evaluates to the same numbers.
    let again = temp("crt-eval");
    let linear = crt.join("linear.safetensors");
    let o = runtime(&[
        "eval",
        "--checkpoint",
        linear.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let m2 = read_json(&again.join("metrics.json"));
    assert_eq!((&m["top1"], &m["top5"]), (&m2["top1"], &m2["top5"]));
    // A classifier checkpoint is not a backbone to re-train on: refused, saying what is.
    let o = runtime(&[
        "linear",
        "--checkpoint",
        linear.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--loss ce"), "{}", text(&o));
}

#[test]
fn resume_continues_with_the_same_losses() {
    let train = |out: &Path, extra: &[&str]| {
        let mut args = vec!["train", "--out", out.to_str().unwrap()];
        args.extend_from_slice(&QUICK[..8]); // epochs, batch, queue, crops
        args.extend_from_slice(extra);
        let o = runtime(&args);
        assert!(o.status.success(), "{}", text(&o));
    };
    let full = temp("full");
    train(&full, &[]);
    let reference = step_losses(&full, "stage1");
    assert!(reference.len() >= 20, "{reference:?}");

    // The same run interrupted mid-epoch (after 7 steps) and at an epoch's end, then resumed.
    for stop in ["7", "15"] {
        let part = temp(&format!("part{stop}"));
        train(&part, &["--stop-after", stop]);
        assert_eq!(
            step_losses(&part, "stage1").len(),
            stop.parse::<usize>().unwrap()
        );
        train(&part, &["--resume"]);
        assert_eq!(
            step_losses(&part, "stage1"),
            reference,
            "stopped after {stop}"
        );
    }
    // Resuming with other settings is refused, naming each one that differs.
    let part = temp("other");
    train(&part, &["--stop-after", "3"]);
    let mut args = vec![
        "train",
        "--out",
        part.to_str().unwrap(),
        "--resume",
        "--tau",
        "0.5",
        "--momentum-encoder",
        "0.9",
    ];
    args.extend_from_slice(&QUICK[..8]);
    let o = runtime(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    for says in [
        "different settings",
        "--tau: saved 0.2, now 0.5",
        "--momentum-encoder: saved 0.99, now 0.9",
    ] {
        assert!(text(&o).contains(says), "{says}: {}", text(&o));
    }
    // Settings that cannot change the results are not compared: another worker count and
    // checkpoint frequency resume, to the same losses.
    train(
        &part,
        &["--resume", "--workers", "1", "--checkpoint-every", "5"],
    );
    assert_eq!(step_losses(&part, "stage1"), reference);
}

#[test]
fn queue_init_random_starts_full_and_resume_keeps_it() {
    let train = |out: &Path, extra: &[&str]| -> Output {
        let mut args = vec!["train", "--out", out.to_str().unwrap()];
        args.extend_from_slice(&QUICK[..8]); // epochs, batch 32, queue 64, crops
        args.extend_from_slice(extra);
        runtime(&args)
    };
    // The default is the random start: a run without the flag is the reference, and the
    // resumed run below, with `--queue-init random`, must continue it exactly.
    let full = temp("q-random");
    let o = train(&full, &["--stop-after", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    let config = Checkpoint::read(&full.join("stage1.safetensors"))
        .unwrap()
        .meta("config")
        .unwrap()
        .to_string();
    assert!(config.contains(r#""queue_init":"random""#), "{config}");
    let o = train(&full, &["--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    let reference = step_losses(&full, "stage1");
    assert!(reference.iter().all(|l| l.is_finite()), "{reference:?}");
    // The random keys take part from the first step: its loss differs from the empty start's.
    let empty = temp("q-empty");
    let o = train(&empty, &["--queue-init", "empty", "--stop-after", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_ne!(step_losses(&empty, "stage1")[0], reference[0]);

    // After one step of 32 keys the random queue counts as full (64 of 64, next row 32) and
    // the checkpoint records the setting; the empty one holds the 32 real keys.
    let part = temp("q-part");
    let o = train(&part, &["--queue-init", "random", "--stop-after", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    let queue_of = |dir: &Path| {
        let ckpt = Checkpoint::read(&dir.join("stage1.safetensors")).unwrap();
        let (_, labels) = ckpt.get_u32("queue.labels").unwrap();
        assert!(labels.iter().all(|&l| l < 10), "{labels:?}");
        (
            ckpt.meta("queue_filled").unwrap().to_string(),
            ckpt.meta("queue_next").unwrap().to_string(),
            ckpt.meta("config").unwrap().to_string(),
        )
    };
    let (filled, next, config) = queue_of(&part);
    assert_eq!((filled.as_str(), next.as_str()), ("64", "32"));
    assert!(config.contains(r#""queue_init":"random""#), "{config}");
    let (filled, _, config) = queue_of(&empty);
    assert_eq!(filled, "32");
    assert!(config.contains(r#""queue_init":"empty""#), "{config}");

    // Resuming under the other setting is refused; under the same one it continues exactly.
    let o = train(&part, &["--queue-init", "empty", "--resume"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("different settings"), "{}", text(&o));
    let o = train(&part, &["--queue-init", "random", "--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(step_losses(&part, "stage1"), reference);

    // An unknown value is a usage error on both commands that train.
    for command in ["train", "run"] {
        let o = runtime(&[
            command,
            "--queue-init",
            "full",
            "--out",
            part.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let t = text(&o);
        assert!(
            t.contains("--queue-init") && t.contains("'full'") && t.contains("random"),
            "{t}"
        );
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = temp("bad");
    let out = dir.join("out");
    let out_s = out.to_str().unwrap();
    // A missing list file.
    let o = runtime(&["train", "--train-list", "/no/such/list.txt", "--out", out_s]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/no/such/list.txt"), "{}", text(&o));
    // An empty list.
    let empty = dir.join("empty.txt");
    fs::write(&empty, "# nothing\n").unwrap();
    let o = runtime(&[
        "train",
        "--train-list",
        empty.to_str().unwrap(),
        "--out",
        out_s,
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("empty"), "{}", text(&o));
    // A malformed line names file and line.
    let bad = dir.join("bad.txt");
    fs::write(&bad, "a.png 0\nb.png x\n").unwrap();
    let o = runtime(&[
        "train",
        "--train-list",
        bad.to_str().unwrap(),
        "--out",
        out_s,
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("bad.txt") && text(&o).contains('2'),
        "{}",
        text(&o)
    );
    // A list whose image is missing: named, and nothing half-written.
    let missing = dir.join("missing.txt");
    fs::write(&missing, "gone.png 0\ngone2.png 1\n").unwrap();
    let o = runtime(&[
        "train",
        "--train-list",
        missing.to_str().unwrap(),
        "--out",
        out_s,
        "--batch-size",
        "2",
        "--image-size",
        "16",
        "--arch",
        "tiny",
        "--queue",
        "4",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("gone"), "{}", text(&o));
    assert!(!out.join("stage1.safetensors").exists());
    // An unwritable output directory is reported before training.
    let o = runtime(&["train", "--out", "/proc/no-such-dir/out", "--epochs", "1"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/proc/no-such-dir/out"), "{}", text(&o));
    // Nonsense flags.
    let o = runtime(&["train", "--tau=-1", "--out", out_s]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--tau"), "{}", text(&o));
    // eval of a stage-1 contrastive checkpoint says what to evaluate instead.
    let o = runtime(&[
        "eval",
        "--checkpoint",
        "/no/such.safetensors",
        "--out",
        out_s,
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/no/such.safetensors"), "{}", text(&o));
}

/// `--replicas R` splits each stage-1 batch into R groups (own batch-norm statistics and
/// contrast set, the keys' batch norm shuffled across them): `run` works with 1, 2 and 4, the
/// setting changes the losses and is recorded, a resumed two-group run continues exactly (the
/// key shuffles are a function of seed and step), and a batch that R does not divide, or a
/// joint crop pass over several groups, is refused before any work.
#[test]
fn replicas_split_the_batch_resume_exactly_and_refuse_what_does_not_divide() {
    let mut first_losses = Vec::new();
    for replicas in ["1", "2", "4"] {
        let out = temp(&format!("replicas-{replicas}"));
        let mut args = vec!["run", "--out", out.to_str().unwrap()];
        args.extend_from_slice(QUICK);
        args.extend_from_slice(&["--replicas", replicas]);
        let o = runtime(&args);
        assert!(o.status.success(), "--replicas {replicas}: {}", text(&o));
        assert!(text(&o).contains("top-1"), "{}", text(&o));
        let config = Checkpoint::read(&out.join("stage1.safetensors"))
            .unwrap()
            .meta("config")
            .unwrap()
            .to_string();
        assert!(
            config.contains(&format!(r#""replicas":{replicas}"#)),
            "{config}"
        );
        first_losses.push(step_losses(&out, "stage1")[0]);
    }
    assert_ne!(first_losses[0], first_losses[1], "{first_losses:?}");
    assert_ne!(first_losses[1], first_losses[2], "{first_losses:?}");

    let train = |out: &Path, extra: &[&str]| -> Output {
        let mut args = vec!["train", "--out", out.to_str().unwrap()];
        args.extend_from_slice(&QUICK[..8]); // epochs, batch 32, queue 64, crops
        args.extend_from_slice(&["--replicas", "2"]);
        args.extend_from_slice(extra);
        runtime(&args)
    };
    let whole = temp("replicas-whole");
    let o = train(&whole, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let parts = temp("replicas-parts");
    let o = train(&parts, &["--stop-after", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = train(&parts, &["--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(step_losses(&parts, "stage1"), step_losses(&whole, "stage1"));

    let refused = temp("replicas-refused");
    for (extra, says) in [
        (
            &["--batch-size", "30", "--replicas", "4"][..],
            "--batch-size (30) must be a multiple of --replicas (4)",
        ),
        (
            &["--replicas", "2", "--crop-norm", "joint"][..],
            "--crop-norm joint is defined for one replica only",
        ),
        (&["--replicas", "0"][..], "--replicas must be between 1 and"),
    ] {
        let mut args = vec!["train", "--out", refused.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = runtime(&args);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{extra:?}: {}", text(&o));
        assert!(
            !refused.join("log.jsonl").exists(),
            "{extra:?} started work"
        );
    }
}

/// Asserts a command was refused before any work: the runtime's error exit, every one of
/// `needles` in its message, and nothing written to `out` but (at most) the lock file.
fn assert_refused_before_work(o: &Output, out: &Path, needles: &[&str]) {
    common::assert_refused(o, needles);
    for file in [
        "log.jsonl",
        "stage1.safetensors",
        "linear.safetensors",
        "metrics.json",
    ] {
        assert!(!out.join(file).exists(), "{file} written:\n{}", text(o));
    }
    assert!(
        !text(o).contains("stage 1:"),
        "training started:\n{}",
        text(o)
    );
}

/// Every numeric flag is checked in every command that takes it, before the backend opens or a
/// file is read, and the error names the flag.
#[test]
fn every_command_checks_its_flags_before_work() {
    let dir = temp("flags");
    let out = dir.join("out");
    let out_s = out.to_str().unwrap();
    // `linear` and `eval` reject their flags before reading the (missing) checkpoint.
    let ckpt = dir.join("no-such.safetensors");
    let ckpt_s = ckpt.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["train", "--stop-after", "0"],
            "--stop-after must be at least 1",
        ),
        (
            &["train", "--momentum-encoder", "1"],
            "--momentum-encoder must lie in [0, 1)",
        ),
        (
            &["train", "--warmup-epochs", "5", "--epochs", "2"],
            "--warmup-epochs (5) must not exceed --epochs (2)",
        ),
        (&["train", "--queue", "0"], "--queue 0 leaves PBSD"),
        (
            &["train", "--queue", "16", "--batch-size", "32"],
            "--queue (16) must hold at least one replica group's keys (32",
        ),
        (&["train", "--workers", "0"], "--workers must be at least 1"),
        // A build without MPI (CI's `cargo test --workspace`) names the feature; one with it,
        // run outside a launcher, names the launcher.
        (
            &["train", "--distributed"],
            if cfg!(feature = "mpi") {
                "needs an MPI launcher"
            } else {
                "--features mpi"
            },
        ),
        (
            &["train", "--device", "1"],
            "--device picks the GPU of --backend cuda",
        ),
        (
            &["train", "--checkpoint-every", "0"],
            "--checkpoint-every must be at least 1",
        ),
        (
            &["train", "--crop-size", "2"],
            "--crop-size must be at least 4",
        ),
        (
            &["train", "--max-index-mib", "0"],
            "--max-index-mib must be at least 1",
        ),
        (
            &["run", "--linear-epochs", "0"],
            "--linear-epochs must be at least 1",
        ),
        (&["run", "--epochs", "0"], "--epochs must be at least 1"),
        (
            &["linear", "--checkpoint", ckpt_s, "--linear-epochs", "0"],
            "--linear-epochs must be at least 1",
        ),
        (
            &["linear", "--checkpoint", ckpt_s, "--linear-batch-size", "0"],
            "--linear-batch-size must be at least 1",
        ),
        (
            &["linear", "--checkpoint", ckpt_s, "--linear-lr=-1"],
            "--linear-lr must be a positive number, got -1",
        ),
        (
            &["eval", "--checkpoint", ckpt_s, "--workers", "0"],
            "--workers must be at least 1",
        ),
    ];
    for (args, needle) in cases {
        let mut all = args.to_vec();
        all.extend(["--out", out_s]);
        let o = runtime(&all);
        assert_refused_before_work(&o, &out, &[needle]);
        assert!(
            !text(&o).contains("no-such"),
            "read before checking:\n{}",
            text(&o)
        );
    }
}

/// `linear` and `eval` read their checkpoint (and the data and memory it names) before they
/// open a device or touch the output directory: the device's line (`backend: ...`, printed
/// once it is open) never appears when the checkpoint is missing, and no output directory is
/// made.
#[test]
fn linear_and_eval_read_their_checkpoint_before_opening_the_device() {
    let dir = temp("read-order");
    let out = dir.join("out");
    let ckpt = dir.join("no-such.safetensors");
    for command in ["linear", "eval"] {
        let o = runtime(&[
            command,
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        common::assert_refused(&o, &["no-such.safetensors"]);
        assert!(
            !text(&o).contains("backend:"),
            "{command}: the device was opened before the checkpoint was read:\n{}",
            text(&o)
        );
        assert!(
            !out.exists(),
            "{command}: the output directory was made:\n{}",
            text(&o)
        );
    }
}

/// `linear --eval-every-epoch` opens the test set the checkpoint names in its data phase too:
/// when that set is gone, it is refused before the device opens and before any training.
#[test]
fn linear_checks_its_test_set_before_opening_the_device() {
    let dir = temp("linear-test-set");
    let train = write_image_list(&dir, "train.txt", 3, 4);
    let test = write_image_list(&dir, "test.txt", 3, 1);
    let stage1 = dir.join("stage1");
    // `run` records the test list in its stage-1 checkpoint (`train` takes no test data).
    let o = runtime(&[
        "run",
        "--train-list",
        train.to_str().unwrap(),
        "--test-list",
        test.to_str().unwrap(),
        "--image-size",
        "8",
        "--arch",
        "tiny",
        "--batch-size",
        "4",
        "--queue",
        "8",
        "--epochs",
        "1",
        "--linear-epochs",
        "1",
        "--linear-batch-size",
        "4",
        "--out",
        stage1.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    fs::remove_file(&test).unwrap();
    let out = dir.join("out");
    let o = runtime(&[
        "linear",
        "--eval-every-epoch",
        "--checkpoint",
        stage1.join("stage1.safetensors").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    common::assert_refused(&o, &["test.txt"]);
    assert!(
        !text(&o).contains("backend:"),
        "the device was opened before the test set was checked:\n{}",
        text(&o)
    );
    assert!(
        !out.exists(),
        "the output directory was made:\n{}",
        text(&o)
    );
}

/// A flag the command would ignore is refused with the reason, all of them in one message.
#[test]
fn flags_a_command_would_ignore_are_refused() {
    let dir = temp("unused");
    let out = dir.join("out");
    let out_s = out.to_str().unwrap();
    let ckpt = dir.join("no-such.safetensors");
    let ckpt_s = ckpt.to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["train", "--test-list", "test.txt"],
            &["--test-list: `train` does not evaluate"],
        ),
        (
            &["train", "--loss", "ce", "--queue", "64", "--tau", "0.1"],
            &[
                "2 flag(s) would be ignored",
                "--queue: --loss ce",
                "--tau: --loss ce",
            ],
        ),
        (
            &["train", "--train-list", "train.txt", "--imbalance", "10"],
            &["--imbalance: --imbalance subsamples CIFAR"],
        ),
        (&["train", "--root", "/data"], &["--root: --root resolves"]),
        (
            &["train", "--pbsd-weight", "0", "--crops", "3"],
            &["--crops: PBSD is off"],
        ),
        (
            &["train", "--loss", "scl", "--beta", "4"],
            &["--beta: --beta weighs"],
        ),
        (
            &["run", "--loss", "ce", "--linear-epochs", "3"],
            &["--linear-epochs: `run --loss ce` has no stage 2"],
        ),
        (
            &["eval", "--checkpoint", ckpt_s, "--image-size", "32"],
            &["--image-size: `eval` takes the training data and image settings"],
        ),
        (
            &[
                "linear",
                "--checkpoint",
                ckpt_s,
                "--split-thresholds",
                "50,10",
            ],
            &["--split-thresholds: `linear` evaluates only with --eval-every-epoch"],
        ),
    ];
    for (args, needles) in cases {
        let mut all = args.to_vec();
        all.extend(["--out", out_s]);
        let o = runtime(&all);
        assert_refused_before_work(&o, &out, needles);
    }
    // The same flags where the command uses them pass this check (and fail later, on the
    // missing list file, for the reason that names it).
    let o = runtime(&[
        "run",
        "--test-list",
        "test.txt",
        "--epochs",
        "1",
        "--out",
        out_s,
    ]);
    assert!(!text(&o).contains("would be ignored"), "{}", text(&o));
}

/// Writes `n` tiny images per class under `dir` and a list file naming them.
fn write_image_list(dir: &Path, name: &str, classes: u32, n: u32) -> PathBuf {
    let mut lines = String::new();
    for c in 0..classes {
        for i in 0..n {
            let file = format!("c{c}-{i}.png");
            let shade = (40 * c + 7 * i) as u8;
            image::RgbImage::from_fn(12, 12, |x, y| {
                image::Rgb([shade, (x * 20) as u8, (y * 20) as u8])
            })
            .save(dir.join(&file))
            .unwrap();
            lines.push_str(&format!("{file} {c}\n"));
        }
    }
    let list = dir.join(name);
    fs::write(&list, lines).unwrap();
    list
}

/// `run` indexes and checks its test data before stage 1 starts: a missing test list, a test
/// label the model cannot have, and a listed test image that does not exist stop it at once.
#[test]
fn run_checks_its_test_data_before_training() {
    let dir = temp("test-data");
    let train = write_image_list(&dir, "train.txt", 3, 4);
    write_image_list(&dir, "good-test.txt", 3, 1);
    let out = dir.join("out");
    let bad_label = dir.join("label.txt");
    fs::write(&bad_label, "c0-0.png 0\nc1-0.png 7\n").unwrap();
    let missing = dir.join("missing.txt");
    fs::write(&missing, "c0-0.png 0\nnot-there.png 1\n").unwrap();
    let cases: [(PathBuf, &[&str]); 3] = [
        (dir.join("no-such-test.txt"), &["no-such-test.txt"]),
        (bad_label, &["label.txt:2", "label 7", "0 to 2"]),
        (missing, &["not-there.png"]),
    ];
    for (test, needles) in cases {
        let o = runtime(&[
            "run",
            "--train-list",
            train.to_str().unwrap(),
            "--test-list",
            test.to_str().unwrap(),
            "--image-size",
            "8",
            "--arch",
            "tiny",
            "--batch-size",
            "4",
            "--queue",
            "8",
            "--epochs",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_refused_before_work(&o, &out, needles);
    }
}

/// A configuration too large for any machine's memory is refused before anything is
/// allocated, with the setting that makes it large.
#[test]
fn a_configuration_that_cannot_fit_in_memory_is_refused_up_front() {
    let dir = temp("memory");
    let out = dir.join("out");
    let out_s = out.to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["train", "--queue", "1000000000000"],
            &["stage 1 of this run needs", "key queue", "change --queue"],
        ),
        (
            &[
                "train",
                "--arch",
                "resnet50",
                "--image-size",
                "8192",
                "--crop-size",
                "64",
            ],
            &["stage 1 of this run needs", "--image-size"],
        ),
        (
            &["train", "--batch-size", "100000000", "--queue", "100000000"],
            &["stage 1 of this run needs", "--batch-size"],
        ),
    ];
    for (args, needles) in cases {
        let mut all = args.to_vec();
        all.extend(["--out", out_s]);
        let o = runtime(&all);
        assert_refused_before_work(&o, &out, needles);
    }
}

/// `--max-index-mib` bounds the list and JSON files a command reads: a 2 MiB list is refused
/// under a 1 MiB limit (naming the limit and the flag) and read under a 3 MiB one.
#[test]
fn max_index_mib_bounds_the_index_files_read() {
    let dir = temp("index-limit");
    let out = dir.join("out");
    let list = dir.join("big.txt");
    // 2 MiB of comment lines and one entry whose image does not exist: read in full, the
    // list fails on that missing image instead.
    let mut lines = "# padding to make the list large\n".repeat(2 * 1024 * 1024 / 33);
    lines.push_str("missing.png 0\n");
    fs::write(&list, lines).unwrap();
    let args = |mib: &'static str| {
        vec![
            "train".to_string(),
            "--train-list".into(),
            list.display().to_string(),
            "--max-index-mib".into(),
            mib.into(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let o = runtime(&args("1"));
    assert_refused_before_work(
        &o,
        &out,
        &[
            "more than the 1 MiB an index file may have",
            "--max-index-mib",
        ],
    );
    let o = runtime(&args("3"));
    assert_refused_before_work(&o, &out, &["missing.png"]);
    assert!(!text(&o).contains("an index file may have"), "{}", text(&o));
}

/// `run` indexes and checks its training and test sets once, before stage 1: stage 2 trains
/// on that training set and every evaluation uses that test set, so a listed image that does
/// not exist is reported once per list, not again by stage 2 or an evaluation.
#[test]
fn run_indexes_its_data_once() {
    let dir = temp("index-once");
    let train = write_image_list(&dir, "train.txt", 3, 4);
    let mut lines = fs::read_to_string(&train).unwrap();
    lines.push_str("not-there.png 1\n");
    fs::write(&train, lines).unwrap();
    let test = write_image_list(&dir, "test.txt", 3, 1);
    let mut lines = fs::read_to_string(&test).unwrap();
    lines.push_str("not-there-either.png 2\n");
    fs::write(&test, lines).unwrap();
    let out = dir.join("out");
    let o = runtime(&[
        "run",
        "--eval-every-epoch",
        "--train-list",
        train.to_str().unwrap(),
        "--test-list",
        test.to_str().unwrap(),
        "--skip-bad",
        "--image-size",
        "8",
        "--arch",
        "tiny",
        "--batch-size",
        "4",
        "--queue",
        "8",
        "--epochs",
        "1",
        "--linear-epochs",
        "1",
        "--linear-batch-size",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // One report per list: the test set too is indexed once, in the data phase, and the
    // per-epoch and final evaluations use that index.
    let reports = text(&o)
        .matches("skipping 1 listed image that does not exist")
        .count();
    assert_eq!(reports, 2, "{}", text(&o));
}
