//! dscl-cuda: the CUDA backend of dscl, through cudarc.
//!
//! The CUDA libraries (the driver's `libcuda`, cuBLAS, NVRTC) are loaded at run time, so
//! everything builds and tests on machines without them; [`CudaDevice::open`] finds out
//! whether this machine can run CUDA and says why not, instead of panicking inside the loader.
//!
//! State: [`CudaBackend`] implements the whole Backend trait: GEMM through cuBLAS, convolutions
//! through cuDNN where it is installed (direct kernels otherwise), at a chosen [`Precision`]
//! (fp32, TF32 or bf16 products), the rest as CUDA C kernels compiled once with NVRTC, one
//! family per `kernels/<family>.cu` and `ops/<family>.rs`, each family's scalars in one struct
//! whose Rust and CUDA declarations the compile checks against each other (`kernel_args.rs`).
//! With the `nccl` feature, [`NcclCollective`] is the collective of `--distributed` CUDA runs
//! (NCCL on the backend's stream, loaded at run time like the rest).
//! The kernels are checked to compile in CI (NVRTC needs no GPU), but none of this has yet run
//! on a GPU: the conformance suite (`tests/tests/conformance_cuda.rs`) and `scripts/gpu-check.sh`
//! are how it will be verified.

mod backend;
#[cfg(feature = "nccl")]
mod collective;
mod conv_algorithms;
mod conv_cudnn;
mod device;
mod gemm;
mod kernel_args;
pub mod kernels;
mod ops;
mod precision;
mod readback;

pub use backend::{CudaBackend, CudaBuffer};
#[cfg(feature = "nccl")]
pub use collective::{find_nccl, NcclCollective, NcclId, NCCL_LIBRARY};
pub use device::{
    cuda_required, no_gpu_verdict, skip_without_gpu, CudaDevice, InitError, REQUIRE_CUDA_VAR,
};
pub use precision::Precision;
