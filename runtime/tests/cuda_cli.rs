//! `--backend cuda` on any machine: where there is no NVIDIA driver (CI) it says so and exits
//! non-zero; where there is a GPU it names it and says the CUDA kernels are not in this
//! version. Never a panic, never a silent fallback to another backend.

use std::path::PathBuf;
use std::process::Command;

fn runtime(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_runtime"))
        .args(args)
        .output()
        .expect("the runtime binary starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn assert_refused(code: Option<i32>, text: &str) {
    assert!(
        code.is_some_and(|c| c != 0),
        "exit code {code:?}, output:\n{text}"
    );
    assert!(!text.contains("panicked"), "a panic:\n{text}");
    assert!(text.contains("--backend cuda:"), "no reason given:\n{text}");
    assert!(
        text.contains("no CUDA driver found")
            || text.contains("reports no GPU")
            || text.contains("no CUDA kernels yet")
            || text.contains("could not be loaded"),
        "the reason is not one of the documented ones:\n{text}"
    );
    assert!(!text.contains("loss"), "something trained:\n{text}");
}

#[test]
fn train_with_cuda_is_refused_with_a_reason() {
    let out = std::env::temp_dir().join(format!("dscl-cuda-cli-{}", std::process::id()));
    let out = out.to_string_lossy().into_owned();
    let (code, text) = runtime(&["train", "--backend", "cuda", "--epochs", "1", "--out", &out]);
    assert_refused(code, &text);
    println!("{text}");
}

#[test]
fn verify_with_cuda_is_refused_with_a_reason() {
    let vectors =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/dscl_vectors_small.json");
    let vectors = vectors.to_string_lossy().into_owned();
    let (code, text) = runtime(&["verify", "--backend", "cuda", &vectors]);
    assert_refused(code, &text);
}
