//! dscl-cuda: the CUDA backend of dscl, through cudarc.
//!
//! The CUDA libraries (the driver's `libcuda`, cuBLAS, NVRTC) are loaded at run time, so
//! everything builds and tests on machines without them; [`CudaDevice::open`] finds out
//! whether this machine can run CUDA and says why not, instead of panicking inside the loader.
//!
//! State: [`CudaBackend`] implements the whole Backend trait: GEMM through cuBLAS (fp32), the
//! rest as CUDA C kernels compiled once with NVRTC (direct convolutions for now; cuDNN or
//! implicit-GEMM tiles are the fast path still to come). The kernels are checked to compile in
//! CI (NVRTC needs no GPU), but none of this has yet run on a GPU: the conformance suite
//! (`tests/tests/conformance_cuda.rs`) and `scripts/gpu-check.sh` are how it will be verified.

mod backend;
mod device;
pub mod kernels;
mod ops;

pub use backend::{CudaBackend, CudaBuffer};
pub use device::{CudaDevice, InitError};
