//! The CUDA C kernels (`src/kernels/*.cu`), compiled at run time with NVRTC.
//!
//! The sources are plain CUDA C with no host headers, concatenated after `common.cuh`; the
//! entry points are `extern "C"`, so their names are the ones listed in [`ENTRY_POINTS`].
//!
//! What the driver is given: a CUBIN for the device's real architecture (`sm_XY`) wherever
//! NVRTC can make one, PTX only where it cannot (a device newer than the NVRTC). PTX has to be
//! compiled again by the driver's JIT, and a driver older than the NVRTC refuses it
//! (`CUDA_ERROR_UNSUPPORTED_PTX_VERSION`): exactly the case of an NVRTC that came with a recent
//! PyTorch wheel on a machine whose driver supports an older CUDA 12. A CUBIN from any NVRTC of
//! the driver's major version loads (CUDA's minor-version compatibility). Should a CUBIN still
//! not load, the PTX is tried, and if that fails too the error names both, with the NVRTC and
//! driver versions.
//!
//! Each image is compiled once per process and architecture ([`image_for`] keeps it), however
//! many backends are opened.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaModule};
use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys, Ptx};

use crate::device::InitError;
use crate::kernel_args;
use crate::ops::ARGS;

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
    "bn_finish",
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

/// What NVRTC compiles for: an architecture as `10 * major + minor` (sm_90 is 90).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Machine code for this real architecture and the later minor versions of its major one.
    Cubin(u32),
    /// PTX for this virtual architecture, which the driver compiles for the device.
    Ptx(u32),
}

impl Target {
    fn option(self) -> String {
        match self {
            Target::Cubin(arch) => format!("--gpu-architecture=sm_{arch}"),
            Target::Ptx(arch) => format!("--gpu-architecture=compute_{arch}"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Cubin(arch) => write!(f, "sm_{arch} CUBIN"),
            Target::Ptx(arch) => write!(f, "compute_{arch} PTX"),
        }
    }
}

/// The CUBIN target for a device of compute capability `major.minor`, among the architectures
/// NVRTC supports (`supported`, as `10 * major + minor`): the newest of the device's major
/// version not above its minor one, since a CUBIN runs on its own architecture and the later
/// minor versions of the same major one. `None` when NVRTC knows no such architecture (a
/// device newer than the NVRTC).
pub fn cubin_target(major: u32, minor: u32, supported: &[u32]) -> Option<Target> {
    supported
        .iter()
        .copied()
        .filter(|&arch| arch / 10 == major && arch % 10 <= minor)
        .max()
        .map(Target::Cubin)
}

/// The PTX target for the same device: the newest supported architecture not above it (PTX
/// runs on its architecture and every later one). `None` when the device is older than every
/// architecture NVRTC supports.
pub fn ptx_target(major: u32, minor: u32, supported: &[u32]) -> Option<Target> {
    let device = 10 * major + minor;
    supported
        .iter()
        .copied()
        .filter(|&arch| arch <= device)
        .max()
        .map(Target::Ptx)
}

/// Whether NVRTC's library can be loaded here.
pub fn nvrtc_present() -> bool {
    // SAFETY: probing opens (and closes) the shared library with the platform loader; its
    // initialisers are the vendor's. cudarc would otherwise panic on first use when it is absent.
    unsafe { nvrtc_sys::is_culib_present() }
}

/// The loaded NVRTC's version (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32), String> {
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: two valid out-pointers; the function only writes them.
    unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| format!("NVRTC did not report its version: {e:?}"))?;
    Ok((major, minor))
}

/// The real architectures the loaded NVRTC compiles for, as `10 * major + minor`, ascending.
pub fn supported_architectures() -> Result<Vec<u32>, String> {
    let mut count: c_int = 0;
    // SAFETY: a valid out-pointer; the function only writes it.
    unsafe { nvrtc_sys::nvrtcGetNumSupportedArchs(&mut count) }
        .result()
        .map_err(|e| format!("NVRTC did not list its architectures: {e:?}"))?;
    let mut archs: Vec<c_int> = vec![0; usize::try_from(count).unwrap_or(0)];
    if !archs.is_empty() {
        // SAFETY: `archs` holds the `count` elements NVRTC said it would write.
        unsafe { nvrtc_sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
            .result()
            .map_err(|e| format!("NVRTC did not list its architectures: {e:?}"))?;
    }
    let mut archs: Vec<u32> = archs
        .into_iter()
        .filter_map(|a| u32::try_from(a).ok())
        .collect();
    archs.sort_unstable();
    Ok(archs)
}

/// NVRTC's `nvrtcGet{CUBIN,PTX}Size` and `nvrtcGet{CUBIN,PTX}`.
type SizeQuery = unsafe fn(nvrtc_sys::nvrtcProgram, *mut usize) -> nvrtc_sys::nvrtcResult;
type ImageQuery = unsafe fn(nvrtc_sys::nvrtcProgram, *mut c_char) -> nvrtc_sys::nvrtcResult;

/// An NVRTC program, destroyed on drop (cudarc's own wrapper unwraps the destruction).
struct Program {
    handle: nvrtc_sys::nvrtcProgram,
    // NVRTC may keep pointers into the source and name until the program is destroyed.
    _source: CString,
    _name: CString,
}

impl Program {
    fn new(source: &str) -> Result<Self, String> {
        let source = CString::new(source).map_err(|_| "kernel source holds a NUL".to_string())?;
        let name = CString::from(c"dscl_kernels.cu");
        let handle = nvrtc::create_program(&source, Some(&name))
            .map_err(|e| format!("NVRTC could not create a program: {e:?}"))?;
        Ok(Program {
            handle,
            _source: source,
            _name: name,
        })
    }

    fn log(&self) -> String {
        // SAFETY: the program is live until `self` drops.
        match unsafe { nvrtc::get_program_log(self.handle) } {
            // SAFETY: NVRTC's log is NUL-terminated.
            Ok(log) if !log.is_empty() => unsafe { CStr::from_ptr(log.as_ptr()) }
                .to_string_lossy()
                .into_owned(),
            _ => String::new(),
        }
    }

    /// The compiled image: the CUBIN's bytes, or the PTX with its terminating NUL (as the
    /// driver's module loader reads it).
    fn output(&self, target: Target) -> Result<Vec<u8>, String> {
        let (size_of, get): (SizeQuery, ImageQuery) = match target {
            Target::Cubin(_) => (nvrtc_sys::nvrtcGetCUBINSize, nvrtc_sys::nvrtcGetCUBIN),
            Target::Ptx(_) => (nvrtc_sys::nvrtcGetPTXSize, nvrtc_sys::nvrtcGetPTX),
        };
        let mut size = 0usize;
        // SAFETY: the program is live and compiled; a valid out-pointer.
        unsafe { size_of(self.handle, &mut size) }
            .result()
            .map_err(|e| format!("NVRTC gave no {target}: {e:?}"))?;
        if size == 0 {
            return Err(format!("NVRTC gave an empty {target}"));
        }
        let mut bytes = vec![0u8; size];
        // SAFETY: `bytes` holds the `size` bytes NVRTC said it would write.
        unsafe { get(self.handle, bytes.as_mut_ptr().cast()) }
            .result()
            .map_err(|e| format!("NVRTC gave no {target}: {e:?}"))?;
        Ok(bytes)
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by `create_program` and destroyed only here. A failure would leak
        // the program, which is better than a panic in a drop.
        let _ = unsafe { nvrtc::destroy_program(self.handle) };
    }
}

/// Compiles [`SOURCE`] for `target`. IEEE division and square roots, no flush-to-zero and no
/// fused multiply-add contraction: the kernels then round as the CPU backend does, which the
/// conformance tolerances assume. The kernels' argument structs are checked against their
/// Rust declarations as they compile (`kernel_args.rs`): a difference is an error naming it.
pub fn compile(target: Target) -> Result<Vec<u8>, String> {
    compile_with(target, &kernel_args::defines(ARGS))
}

/// [`compile`] with `defines` (`-DNAME=VALUE` options) in place of the argument structs' own.
pub(crate) fn compile_with(target: Target, defines: &[String]) -> Result<Vec<u8>, String> {
    let program = Program::new(SOURCE)?;
    let mut options = vec![
        "--ftz=false".to_string(),
        "--prec-sqrt=true".to_string(),
        "--prec-div=true".to_string(),
        "--fmad=false".to_string(),
        target.option(),
    ];
    options.extend_from_slice(defines);
    // SAFETY: the program is live; the options are NUL-free strings.
    if let Err(e) = unsafe { nvrtc::compile_program(program.handle, &options) } {
        return Err(format!(
            "NVRTC rejected the kernels for {target} ({e:?}):\n{}",
            program.log()
        ));
    }
    program.output(target)
}

/// A compiled image of [`SOURCE`].
pub struct KernelImage {
    pub target: Target,
    /// NVRTC's version, for messages.
    pub nvrtc: (i32, i32),
    bytes: Vec<u8>,
}

impl KernelImage {
    /// The image as cudarc's module loader takes it.
    fn module_source(&self) -> Ptx {
        Ptx::from_binary(self.bytes.clone())
    }

    /// The image's bytes (ELF for a CUBIN, NUL-terminated text for PTX).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The images compiled so far in this process, by target.
fn images() -> &'static Mutex<HashMap<Target, Arc<KernelImage>>> {
    static IMAGES: OnceLock<Mutex<HashMap<Target, Arc<KernelImage>>>> = OnceLock::new();
    IMAGES.get_or_init(Default::default)
}

/// The image for `target`, compiled on first use in this process and kept.
pub fn image(target: Target) -> Result<Arc<KernelImage>, String> {
    // The lock is held while compiling, so two backends opened at once compile once.
    let mut images = images()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(image) = images.get(&target) {
        return Ok(image.clone());
    }
    let made = Arc::new(KernelImage {
        target,
        nvrtc: nvrtc_version()?,
        bytes: compile(target)?,
    });
    images.insert(target, made.clone());
    Ok(made)
}

/// The image for a device of compute capability `major.minor`: a CUBIN where NVRTC supports
/// the device's architecture, PTX otherwise (see the module documentation).
pub fn image_for(major: u32, minor: u32) -> Result<Arc<KernelImage>, String> {
    let supported = supported_architectures()?;
    match cubin_target(major, minor, &supported) {
        Some(target) => image(target),
        None => image(ptx_fallback(major, minor, &supported)?),
    }
}

fn ptx_fallback(major: u32, minor: u32, supported: &[u32]) -> Result<Target, String> {
    ptx_target(major, minor, supported).ok_or_else(|| {
        format!(
            "NVRTC supports none of the architectures up to sm_{major}{minor} (it supports \
             {supported:?}): this GPU is older than the loaded NVRTC can compile for"
        )
    })
}

/// The CUDA version the driver supports, as "12.4".
fn driver_cuda_version() -> String {
    let mut version: c_int = 0;
    // SAFETY: a valid out-pointer; the function only writes it.
    match unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) }.result() {
        Ok(()) => format!("{}.{}", version / 1000, (version % 1000) / 10),
        Err(e) => format!("unknown ({e})"),
    }
}

/// Compiles (once per process) and loads the kernels into `context` for its device: the
/// CUBIN, or the PTX where no CUBIN can be made or the CUBIN does not load.
pub(crate) fn load(
    context: &Arc<CudaContext>,
) -> Result<(Arc<CudaModule>, Arc<KernelImage>), InitError> {
    let (major, minor) = context
        .compute_capability()
        .map_err(|e| InitError(format!("could not read the compute capability: {e}")))?;
    let (major, minor) = (major.max(0) as u32, minor.max(0) as u32);
    let first = image_for(major, minor).map_err(InitError)?;
    let first_error = match context.load_module(first.module_source()) {
        Ok(module) => return Ok((module, first)),
        Err(e) => e,
    };
    let refused = |image: &KernelImage, e: &dyn fmt::Display| {
        let (nv_major, nv_minor) = image.nvrtc;
        format!(
            "the driver (CUDA {}) could not load the kernels NVRTC {nv_major}.{nv_minor} \
             compiled as {}: {e}",
            driver_cuda_version(),
            image.target
        )
    };
    let mut message = refused(&first, &first_error);
    if let Target::Cubin(_) = first.target {
        let ptx = supported_architectures()
            .and_then(|supported| ptx_fallback(major, minor, &supported))
            .and_then(image);
        match ptx {
            Ok(ptx) => match context.load_module(ptx.module_source()) {
                Ok(module) => return Ok((module, ptx)),
                Err(e) => message = format!("{message}; {}", refused(&ptx, &e)),
            },
            Err(e) => message = format!("{message}; no PTX either: {e}"),
        }
    }
    Err(InitError(format!(
        "{message}. Use an NVRTC of a CUDA version this driver supports (put its libnvrtc first \
         on LD_LIBRARY_PATH) or a newer driver"
    )))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The architectures the CI's and the GPU machines' NVRTCs must compile for: Turing,
    /// Ampere and Hopper (CUDA 13's NVRTC dropped everything before Turing).
    const CHECKED: &[u32] = &[75, 80, 90];

    /// Skips (saying so) where NVRTC is absent, except in CI, which installs it, and where a
    /// GPU is required.
    pub(crate) fn nvrtc_or_skip() -> bool {
        if nvrtc_present() {
            return true;
        }
        assert!(
            std::env::var("CI").is_err(),
            "NVRTC (libnvrtc) is not loadable in CI: .ci/run installs it"
        );
        crate::skip_without_gpu("NVRTC (libnvrtc) is not installed here");
        false
    }

    /// Every Kahan sum reaches the block's tree with its compensation applied (`k.s - k.c`):
    /// passing `k.s` alone compiles, runs and silently drops the low-order part.
    #[test]
    fn kahan_sums_apply_their_compensation() {
        let mut calls = 0;
        for (number, line) in SOURCE.lines().enumerate() {
            let Some(at) = line.find("block_sum(") else {
                continue;
            };
            let argument = line[at + "block_sum(".len()..]
                .split(',')
                .next()
                .unwrap_or("");
            if let Some(sum) = argument.trim().strip_suffix(".s") {
                panic!("line {}: `{sum}.s` without `- {sum}.c`: {line}", number + 1);
            }
            calls += 1;
        }
        // The definition and every caller were seen.
        assert!(calls >= 12, "only {calls} block_sum calls found");
    }

    /// The kernels compile to a CUBIN (an ELF image) and to PTX for every checked architecture,
    /// and every listed entry point is in both (no GPU needed: NVRTC only compiles).
    #[test]
    fn every_kernel_compiles_to_cubin_and_ptx() {
        if !nvrtc_or_skip() {
            return;
        }
        let supported = supported_architectures().unwrap();
        let (major, minor) = nvrtc_version().unwrap();
        println!("NVRTC {major}.{minor}, architectures {supported:?}");
        for &arch in CHECKED {
            assert!(
                supported.contains(&arch),
                "NVRTC lacks sm_{arch}: {supported:?}"
            );
            let cubin = image(Target::Cubin(arch)).unwrap_or_else(|e| panic!("sm_{arch}: {e}"));
            assert_eq!(
                &cubin.bytes()[..4],
                b"\x7fELF",
                "sm_{arch}: not an ELF image"
            );
            let ptx = image(Target::Ptx(arch)).unwrap_or_else(|e| panic!("compute_{arch}: {e}"));
            let text = String::from_utf8_lossy(ptx.bytes());
            assert!(
                text.contains(&format!(".target sm_{arch}")),
                "compute_{arch}"
            );
            for entry in ENTRY_POINTS {
                let symbol = entry.as_bytes();
                assert!(
                    cubin
                        .bytes()
                        .windows(symbol.len() + 1)
                        .any(|w| { w[..symbol.len()] == *symbol && w[symbol.len()] == 0 }),
                    "sm_{arch}: {entry} is not a symbol of the CUBIN"
                );
                assert!(
                    text.contains(&format!(".entry {entry}(")),
                    "compute_{arch}: {entry} is not in the PTX"
                );
            }
        }
    }

    /// A second request for a target returns the image compiled the first time.
    #[test]
    fn each_target_compiles_once_per_process() {
        if !nvrtc_or_skip() {
            return;
        }
        let first = image_for(8, 0).unwrap();
        assert_eq!(first.target, Target::Cubin(80));
        let again = image_for(8, 0).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "sm_80 was compiled twice");
        // sm_86 runs the sm_86 CUBIN where NVRTC has one: its own cache entry.
        let ampere = image_for(8, 6).unwrap();
        assert_eq!(ampere.target, Target::Cubin(86));
    }

    #[test]
    fn each_device_gets_a_cubin_it_runs_else_the_newest_ptx() {
        // What nvrtcGetSupportedArchs lists in NVRTC 12.9 and 13.5.
        let cuda12 = [
            50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90, 100, 101, 103, 120, 121,
        ];
        let cuda13 = [75, 80, 86, 87, 88, 89, 90, 100, 103, 107, 110, 120, 121];
        type Case<'a> = ((u32, u32), &'a [u32], Option<Target>, Option<Target>);
        let cases: [Case; 8] = [
            (
                (9, 0),
                &cuda12,
                Some(Target::Cubin(90)),
                Some(Target::Ptx(90)),
            ),
            (
                (8, 6),
                &cuda12,
                Some(Target::Cubin(86)),
                Some(Target::Ptx(86)),
            ),
            // No sm_88 in CUDA 12's list: the sm_87 CUBIN runs on an 8.8 device.
            (
                (8, 8),
                &cuda12,
                Some(Target::Cubin(87)),
                Some(Target::Ptx(87)),
            ),
            ((7, 0), &cuda13, None, None),
            (
                (7, 5),
                &cuda13,
                Some(Target::Cubin(75)),
                Some(Target::Ptx(75)),
            ),
            // A device newer than the NVRTC: no CUBIN, the newest PTX.
            ((13, 0), &cuda12, None, Some(Target::Ptx(121))),
            (
                (10, 2),
                &cuda12,
                Some(Target::Cubin(101)),
                Some(Target::Ptx(101)),
            ),
            (
                (6, 1),
                &cuda12,
                Some(Target::Cubin(61)),
                Some(Target::Ptx(61)),
            ),
        ];
        for ((major, minor), supported, cubin, ptx) in cases {
            assert_eq!(
                cubin_target(major, minor, supported),
                cubin,
                "{major}.{minor}"
            );
            assert_eq!(ptx_target(major, minor, supported), ptx, "{major}.{minor}");
        }
    }
}
