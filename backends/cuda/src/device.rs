//! Finding and opening a CUDA device.

use std::fmt;
use std::sync::Arc;

use cudarc::driver::CudaContext;

/// Why no CUDA device could be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitError(pub String);

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InitError {}

/// The environment variable that makes a missing GPU a failure: set (to anything but empty or
/// `0`) where a GPU is supposed to be, as `scripts/gpu-check.sh` does, so no CUDA test can pass
/// by skipping.
pub const REQUIRE_CUDA_VAR: &str = "DSCL_REQUIRE_CUDA";

/// Whether [`REQUIRE_CUDA_VAR`] is set.
pub fn cuda_required() -> bool {
    std::env::var_os(REQUIRE_CUDA_VAR).is_some_and(|v| !v.is_empty() && v != "0")
}

/// What a test that found no usable GPU (for `reason`) does: skip, with the line it prints, or,
/// when a GPU is `required`, fail with the message it panics with.
pub fn no_gpu_verdict(required: bool, reason: &str) -> Result<String, String> {
    if required {
        Err(format!(
            "{REQUIRE_CUDA_VAR} is set but CUDA is not usable here: {reason}"
        ))
    } else {
        Ok(format!("skipped: {reason}"))
    }
}

/// For tests: prints the skip for `reason`, or panics with it when [`cuda_required`].
pub fn skip_without_gpu(reason: &str) {
    match no_gpu_verdict(cuda_required(), reason) {
        Ok(skip) => println!("{skip}"),
        Err(failure) => panic!("{failure}"),
    }
}

/// One opened GPU: its primary context, and its name as the driver reports it.
#[derive(Clone)]
pub struct CudaDevice {
    context: Arc<CudaContext>,
    name: String,
}

impl CudaDevice {
    /// Opens GPU `ordinal` (0 is the first). Checks, in order, that the driver library loads,
    /// that it has a device of that ordinal, and that cuBLAS and NVRTC load; each failure is
    /// an error that names what is missing.
    pub fn open(ordinal: usize) -> Result<Self, InitError> {
        // SAFETY: probing opens (and closes) the shared library with the platform loader; its
        // initialisers are the vendor's, run as any CUDA program runs them. cudarc would
        // otherwise panic on first use when the library is absent.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(InitError(
                "no CUDA driver found (libcuda could not be loaded): this machine has no NVIDIA \
                 GPU driver; use --backend cpu or --backend wgpu"
                    .into(),
            ));
        }
        let count = CudaContext::device_count()
            .map_err(|e| InitError(format!("the CUDA driver could not list its devices: {e}")))?;
        if count <= 0 {
            return Err(InitError(
                "the CUDA driver reports no GPU; use --backend cpu or --backend wgpu".into(),
            ));
        }
        if ordinal >= count as usize {
            return Err(InitError(format!(
                "CUDA device {ordinal} does not exist: the driver reports {count}"
            )));
        }
        for (present, library) in [
            // SAFETY: as above, for cuBLAS and NVRTC.
            (
                unsafe { cudarc::cublas::sys::is_culib_present() },
                "cuBLAS (libcublas)",
            ),
            (
                unsafe { cudarc::nvrtc::sys::is_culib_present() },
                "NVRTC (libnvrtc)",
            ),
        ] {
            if !present {
                return Err(InitError(format!(
                    "the CUDA driver is present but {library} could not be loaded: install the \
                     CUDA 12 or 13 libraries, or put the directory that holds them (under a \
                     plain name such as libcublas.so) on LD_LIBRARY_PATH"
                )));
            }
        }
        let context = CudaContext::new(ordinal)
            .map_err(|e| InitError(format!("could not open CUDA device {ordinal}: {e}")))?;
        let name = context
            .name()
            .map_err(|e| InitError(format!("could not read CUDA device {ordinal}'s name: {e}")))?;
        Ok(CudaDevice { context, name })
    }

    /// The device's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's primary context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.context
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where there is no driver, opening is an error naming it; where there is one, device 0
    /// opens and a device past the count is an error. Either way, nothing panics.
    #[test]
    fn opening_reports_rather_than_panics() {
        match CudaDevice::open(0) {
            Ok(device) => {
                assert!(!device.name().is_empty());
                let err = CudaDevice::open(1 << 20).err().map(|e| e.0);
                assert!(err.is_some_and(|e| e.contains("does not exist")));
            }
            Err(e) => {
                assert!(
                    e.0.contains("CUDA"),
                    "the error must say what is missing: {e}"
                );
                skip_without_gpu(&format!("no CUDA device ({e})"));
            }
        }
    }

    #[test]
    fn a_missing_gpu_fails_only_where_one_is_required() {
        let reason = "no CUDA driver found";
        assert_eq!(
            no_gpu_verdict(false, reason),
            Ok("skipped: no CUDA driver found".to_string())
        );
        let failure = no_gpu_verdict(true, reason).unwrap_err();
        assert!(failure.contains(REQUIRE_CUDA_VAR) && failure.contains(reason));
    }
}
