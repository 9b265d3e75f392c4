//! The conformance suite on the CUDA backend, one `#[test]` per family, when this machine has
//! an NVIDIA GPU with its driver, cuBLAS and NVRTC; otherwise each test prints why it skipped
//! (CI has no GPU: `scripts/gpu-check.sh` runs this on a GPU machine).

use dscl_cuda::CudaBackend;
use dscl_tests::conformance::Conformance;
use dscl_tests::harness::{Config, Factory};

struct Fresh(CudaBackend);

impl Factory for Fresh {
    type Backend<'a> = CudaBackend;
    fn make(&mut self) -> CudaBackend {
        // A case that cannot get a stream on a working device is a failure of the device.
        match self.0.fresh() {
            Ok(be) => be,
            Err(e) => panic!("could not make a CUDA backend: {e}"),
        }
    }
}

/// The suite on GPU 0 (kernels compiled once, a fresh stream and fault slot per case), or
/// `None` after saying why there is none.
fn suite() -> Option<Conformance<Fresh>> {
    match CudaBackend::new(0) {
        Ok(be) => {
            // Parallel reductions sum in another order than the sequential reference.
            let cfg = Config::from_env().with_tol_scale(8.0);
            Some(Conformance::with_config(Fresh(be), cfg))
        }
        Err(reason) => {
            println!("skipped: no CUDA device ({reason})");
            None
        }
    }
}

dscl_tests::conformance_tests!(suite());
