//! dscl-cuda: the CUDA backend of dscl, through cudarc.
//!
//! The CUDA libraries (the driver's `libcuda`, cuBLAS, NVRTC) are loaded at run time, so
//! everything builds and tests on machines without them; [`CudaDevice::open`] finds out
//! whether this machine can run CUDA and says why not, instead of panicking inside the loader.
//!
//! State: device discovery and opening. The Backend kernels (cuBLAS GEMM, NVRTC kernels for
//! the rest) are not written yet, so the training commands refuse `--backend cuda` with a
//! message that says so.

mod device;

pub use device::{CudaDevice, InitError};
