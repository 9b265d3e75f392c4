//! `--backend cuda` where there is no usable GPU (CI): it says why and exits non-zero. Never a
//! panic, never a silent fallback to another backend. On a GPU machine these tests say so and
//! leave the device to `scripts/gpu-check.sh`.

mod common;
use std::path::PathBuf;

fn runtime(args: &[&str]) -> (Option<i32>, String) {
    let out = common::runtime(args);
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
            || text.contains("could not be loaded"),
        "the reason is not one of the documented ones:\n{text}"
    );
    assert!(!text.contains("loss"), "something trained:\n{text}");
}

/// Whether this machine has a GPU the CUDA backend opens (then nothing is refused).
fn gpu_present() -> bool {
    let present = dscl_cuda::CudaDevice::open(0).is_ok();
    if present {
        println!("skipped: this machine has a CUDA GPU; scripts/gpu-check.sh covers it");
    }
    present
}

#[test]
fn train_with_cuda_is_refused_with_a_reason() {
    if gpu_present() {
        return;
    }
    let out = std::env::temp_dir().join(format!("dscl-cuda-cli-{}", std::process::id()));
    let out = out.to_string_lossy().into_owned();
    let (code, text) = runtime(&["train", "--backend", "cuda", "--epochs", "1", "--out", &out]);
    assert_refused(code, &text);
    println!("{text}");
}

#[test]
fn verify_with_cuda_is_refused_with_a_reason() {
    if gpu_present() {
        return;
    }
    let vectors =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/dscl_vectors_small.json");
    let vectors = vectors.to_string_lossy().into_owned();
    let (code, text) = runtime(&["verify", "--backend", "cuda", &vectors]);
    assert_refused(code, &text);
}

/// A reduced precision is a CUDA option: on another backend it is refused before anything
/// trains (it would otherwise be silently ignored), and an unknown precision is a usage error.
/// Neither needs a GPU.
#[test]
fn precision_other_than_fp32_needs_cuda() {
    let out = std::env::temp_dir().join(format!("dscl-precision-cli-{}", std::process::id()));
    let out = out.to_string_lossy().into_owned();
    for backend in ["cpu", "wgpu"] {
        let (code, text) = runtime(&[
            "train",
            "--backend",
            backend,
            "--precision",
            "tf32",
            "--epochs",
            "1",
            "--out",
            &out,
        ]);
        assert_eq!(code, Some(2), "{backend}: output:\n{text}");
        assert!(
            text.contains("--precision tf32 needs --backend cuda")
                && text.contains(&format!("the {backend} backend computes in fp32")),
            "{backend}: output:\n{text}"
        );
        assert!(!text.contains("loss"), "something trained:\n{text}");
    }
    let (code, text) = runtime(&["train", "--precision", "fp16", "--out", &out]);
    assert_eq!(code, Some(2), "output:\n{text}");
    assert!(text.contains("unknown precision `fp16`"), "output:\n{text}");
    assert!(
        !std::path::Path::new(&out).exists(),
        "a refused run created its output directory"
    );
}
