//! dscl-cuda: the CUDA backend of dscl, through cudarc.
//!
//! The CUDA libraries (the driver's `libcuda`, cuBLAS, NVRTC) are loaded at run time, so
//! everything builds and tests on machines without them; [`CudaDevice::open`] finds out
//! whether this machine can run CUDA and says why not, instead of panicking inside the loader.
//!
//! State: device discovery and opening, and a CUDA C kernel for every Backend family except
//! GEMM (which is to be cuBLAS): elementwise, optimiser, row losses, pooling, batch norm,
//! ROI-align and direct convolutions, checked to compile under NVRTC but not yet run on a GPU.
//! The Backend implementation that launches them is not written yet, so the training commands
//! refuse `--backend cuda` with a message that says so.

mod device;
pub mod kernels;

pub use device::{CudaDevice, InitError};
