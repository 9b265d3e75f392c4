//! `runtime verify` end to end: exit codes and messages a user sees.

mod common;
use std::path::PathBuf;
use std::process::Output;

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/dscl_vectors_small.json")
}

fn runtime(args: &[&str]) -> Output {
    common::runtime(args)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_temp(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dscl-verify-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn cpu_backend_passes_the_shipped_vectors() {
    let out = runtime(&[
        "verify",
        "--backend",
        "cpu",
        vectors_path().to_str().unwrap(),
    ]);
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("all 11 outputs within 1e-4"), "{text}");
    for name in [
        "dscl_loss",
        "supcon_loss",
        "pbsd_loss",
        "grad_students_pbsd",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
}

#[test]
fn reference_backend_passes_at_1e9() {
    let path = vectors_path();
    let out = runtime(&[
        "verify",
        "--backend",
        "reference",
        "--tol",
        "1e-9",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn an_impossible_tolerance_fails_with_exit_code_1() {
    let path = vectors_path();
    let out = runtime(&[
        "verify",
        "--backend",
        "cpu",
        "--tol",
        "1e-12",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAIL"));
}

#[test]
fn malformed_files_are_refused_with_a_clear_message() {
    let original = std::fs::read_to_string(vectors_path()).unwrap();
    let cases = [
        (
            "missing.json",
            original.replacen("\"queue_labels\"", "\"queue_labelz\"", 1),
            "missing field `inputs.queue_labels`",
        ),
        (
            "nan.json",
            original.replacen("\"T\": 0.07", "\"T\": NaN", 1),
            "non-finite value `NaN`",
        ),
        (
            "truncated.json",
            original[..original.len() / 2].to_string(),
            "malformed JSON",
        ),
    ];
    for (name, contents, message) in cases {
        assert_ne!(contents, original, "{name}: the edit did not apply");
        let path = write_temp(name, &contents);
        let out = runtime(&["verify", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
        assert!(text(&out).contains(message), "{name}: {}", text(&out));
    }
    let out = runtime(&["verify", "/nonexistent/vectors.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("reading vectors file /nonexistent/vectors.json"));
}
