//! The CUDA C kernels (`src/kernels/*.cu`), compiled at run time with NVRTC.
//!
//! The sources are plain CUDA C with no host headers, concatenated after `common.cuh`. They are
//! compiled once per process for the device's architecture and the module is kept; the entry
//! points are `extern "C"`, so their names are the ones listed in [`ENTRY_POINTS`].

use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};

/// Every kernel source, in the order NVRTC sees them.
pub const SOURCE: &str = concat!(
    include_str!("kernels/common.cuh"),
    include_str!("kernels/elementwise.cu"),
    include_str!("kernels/optim.cu"),
    include_str!("kernels/rows.cu"),
    include_str!("kernels/pool.cu"),
    include_str!("kernels/batch_norm.cu"),
    include_str!("kernels/roi_align.cu"),
    include_str!("kernels/conv.cu"),
    include_str!("kernels/bf16.cu"),
);

/// The kernels [`SOURCE`] defines.
pub const ENTRY_POINTS: &[&str] = &[
    "fill_f32",
    "copy_u32",
    "scale_f32",
    "axpy_f32",
    "add_f32",
    "relu_forward",
    "relu_backward",
    "sum_f32",
    "bias_add",
    "bias_backward",
    "sgd_momentum",
    "ema_update",
    "l2_normalize_forward",
    "l2_normalize_backward",
    "row_softmax",
    "row_logsumexp",
    "soft_cross_entropy",
    "softmax_cross_entropy",
    "contrastive_labels",
    "contrastive_rows",
    "max_pool_forward",
    "max_pool_backward",
    "gap_forward",
    "gap_backward",
    "bn_stats",
    "bn_apply",
    "bn_backward",
    "roi_check",
    "roi_forward",
    "roi_backward",
    "conv2d_forward",
    "conv2d_backward_data",
    "conv2d_backward_filter",
    "f32_to_bf16",
    "bf16_to_f32",
    "bf16_accumulate_f32",
];

/// Every architecture [`ptx_arch`] picks.
pub const PTX_ARCHS: &[&str] = &[
    "compute_60",
    "compute_70",
    "compute_75",
    "compute_80",
    "compute_90",
];

/// The PTX architecture for a device of compute capability `major.minor`: the newest of
/// [`PTX_ARCHS`] it runs (PTX runs on its architecture and every later one). Turing gets
/// compute_75, not compute_70, because CUDA 13's NVRTC no longer accepts compute_70.
pub fn ptx_arch(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (..=6, _) => "compute_60",
        (7, ..=4) => "compute_70",
        (7, _) => "compute_75",
        (8, _) => "compute_80",
        _ => "compute_90",
    }
}

/// Compiles [`SOURCE`] to PTX for a virtual architecture such as `compute_80` (PTX runs on that
/// architecture and every later one). IEEE division and square roots, no flush-to-zero and no
/// fused multiply-add contraction: the kernels then round as the CPU backend does, which the
/// conformance tolerances assume.
pub fn compile(arch: &'static str) -> Result<Ptx, String> {
    let options = CompileOptions {
        ftz: Some(false),
        prec_sqrt: Some(true),
        prec_div: Some(true),
        fmad: Some(false),
        arch: Some(arch),
        name: Some("dscl_kernels.cu".into()),
        ..Default::default()
    };
    compile_ptx_with_opts(SOURCE, options).map_err(|e| match e {
        CompileError::CompileError { log, .. } => {
            format!("NVRTC rejected the kernels:\n{}", log.to_string_lossy())
        }
        other => format!("NVRTC failed: {other:?}"),
    })
}

/// Whether NVRTC's library can be loaded here.
pub fn nvrtc_present() -> bool {
    // SAFETY: probing opens (and closes) the shared library with the platform loader; its
    // initialisers are the vendor's. cudarc would otherwise panic on first use when it is absent.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels compile, for every architecture the backend picks, wherever NVRTC's library
    /// is (no GPU needed: NVRTC only emits PTX), and every listed entry point is in the PTX.
    /// CI installs NVRTC; elsewhere the test says it skipped.
    #[test]
    fn every_kernel_compiles_under_nvrtc() {
        if !nvrtc_present() {
            assert!(
                std::env::var("CI").is_err(),
                "NVRTC (libnvrtc) is not loadable in CI: .ci/run installs it"
            );
            println!("skipped: NVRTC (libnvrtc) is not installed here");
            return;
        }
        for arch in PTX_ARCHS {
            let ptx = compile(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
            let text = ptx.to_src();
            for entry in ENTRY_POINTS {
                assert!(
                    text.contains(&format!(".entry {entry}(")),
                    "{arch}: {entry} is not in the PTX"
                );
            }
        }
    }

    #[test]
    fn each_device_gets_the_newest_architecture_it_runs() {
        let cases = [
            ((6, 1), "compute_60"),
            ((7, 0), "compute_70"),
            ((7, 5), "compute_75"),
            ((8, 6), "compute_80"),
            ((9, 0), "compute_90"),
            ((12, 0), "compute_90"),
        ];
        for ((major, minor), arch) in cases {
            assert_eq!(ptx_arch(major, minor), arch, "sm_{major}{minor}");
            assert!(PTX_ARCHS.contains(&arch));
        }
    }
}
