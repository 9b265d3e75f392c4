//! The conformance suite on the CUDA backend, one `#[test]` per family, when this machine has
//! an NVIDIA GPU with its driver, cuBLAS and NVRTC; otherwise each test prints why it skipped
//! (CI has no GPU: `scripts/gpu-check.sh` runs this on a GPU machine, with `DSCL_REQUIRE_CUDA=1`,
//! under which a missing GPU fails every test instead).

use dscl_cuda::CudaBackend;
use dscl_tests::conformance::Conformance;
use dscl_tests::harness::{Config, Factory};

/// Where a case's backend convolves: through cuDNN when it is installed, or always with the
/// backend's own direct kernels (which run where cuDNN is missing or refuses a shape).
#[derive(Clone, Copy)]
enum Convolutions {
    CudnnIfPresent,
    Direct,
}

struct Fresh(CudaBackend, Convolutions);

impl Factory for Fresh {
    type Backend<'a> = CudaBackend;
    fn make(&mut self) -> CudaBackend {
        let made = match self.1 {
            Convolutions::CudnnIfPresent => self.0.fresh(),
            Convolutions::Direct => self.0.fresh_with_direct_convolutions(),
        };
        // A case that cannot get a stream on a working device is a failure of the device.
        match made {
            Ok(be) => be,
            Err(e) => panic!("could not make a CUDA backend: {e}"),
        }
    }
}

/// The suite on GPU 0 (kernels compiled once, a fresh stream and fault slot per case), or
/// `None` after saying why there is none.
fn suite(convolutions: Convolutions) -> Option<Conformance<Fresh>> {
    match CudaBackend::new(0) {
        Ok(be) => {
            // Parallel reductions sum in another order than the sequential reference.
            let cfg = Config::from_env().with_tol_scale(8.0);
            Some(Conformance::with_config(Fresh(be, convolutions), cfg))
        }
        Err(reason) => {
            // With DSCL_REQUIRE_CUDA set (a GPU machine's check) this fails instead of skipping.
            dscl_cuda::skip_without_gpu(&format!("no CUDA device ({reason})"));
            None
        }
    }
}

dscl_tests::conformance_tests!(suite(Convolutions::CudnnIfPresent));

/// The direct convolution kernels, checked even where cuDNN would take their place.
mod direct_convolutions {
    use super::*;

    dscl_tests::conformance_tests!(@each suite(Convolutions::Direct); conv2d, shape_errors);
}
