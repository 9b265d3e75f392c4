//! The host side of the kernels: one module per kernel family, as `kernels/<family>.cu`, each
//! with its argument struct (`kernel_args.rs`), its launchers, and the family's trait for
//! [`crate::CudaBackend`]. The dense family (cuBLAS GEMM, and the bias kernels of
//! `elementwise.cu`) is implemented in `gemm.rs`, memory in `backend.rs`.

mod batch_norm;
pub(crate) mod bf16;
mod conv;
pub(crate) mod elementwise;
mod optim;
mod pool;
mod roi_align;
mod rows;

use dscl_core::Result;

use crate::backend::too_large;
use crate::kernel_args::Layout;

/// Every kernel argument struct, for the drift check of the kernels' compile.
pub(crate) const ARGS: &[Layout] = &[
    batch_norm::BatchNormArgs::LAYOUT,
    bf16::Bf16Args::LAYOUT,
    conv::ConvArgs::LAYOUT,
    elementwise::ElementwiseArgs::LAYOUT,
    optim::OptimArgs::LAYOUT,
    pool::PoolArgs::LAYOUT,
    roi_align::RoiAlignArgs::LAYOUT,
    rows::RowsArgs::LAYOUT,
];

/// Launches the kernel that a `match` picks, with one launch configuration and one argument list
/// for every arm: `launch_match!(be, match pass { P::A => "a", P::B => "b" }, cfg, [args])`.
/// [`launch!`](crate::backend::launch) takes its kernel's name as a literal, so a choice among
/// kernels of one signature is a `match` with one launch per arm; written once here, the arms
/// cannot drift apart. A binding of an arm's pattern may appear in the arguments: each arm is
/// typed on its own, so the bound buffer may have another element type in each.
macro_rules! launch_match {
    (
        $be:expr,
        match $selector:ident { $($pattern:pat => $kernel:literal),+ $(,)? },
        $cfg:expr,
        $args:tt $(,)?
    ) => {
        match $selector {
            $( $pattern => $crate::backend::launch!($be, $kernel, $cfg, $args), )+
        }
    };
}
use launch_match;

/// A size as a kernel's `u32` parameter.
fn u32_of(what: &'static str, x: usize) -> Result<u32> {
    u32::try_from(x).map_err(|_| too_large(what))
}
