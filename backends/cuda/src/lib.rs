//! dscl-cuda: the CUDA backend of dscl, through cudarc.
//!
//! The CUDA libraries (the driver's `libcuda`, cuBLAS, NVRTC) are loaded at run time, so
//! everything builds and tests on machines without them; [`CudaDevice::open`] finds out
//! whether this machine can run CUDA and says why not, instead of panicking inside the loader.
//!
//! State: device discovery and opening, and the CUDA C kernels of the elementwise, optimiser
//! and row families (checked to compile under NVRTC; not yet run on a GPU). The rest of the
//! Backend (cuBLAS GEMM, convolution, batch norm, pooling, ROI-align) and the Backend
//! implementation itself are not written yet, so the training commands refuse
//! `--backend cuda` with a message that says so.

mod device;
pub mod kernels;

pub use device::{CudaDevice, InitError};
