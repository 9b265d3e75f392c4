//! Pooling (`kernels/pool.cu`). Max pooling with PyTorch's semantics (padding never selected,
//! the first maximum in row-major window order wins, a NaN in the window is selected and
//! recorded as a fault): the forward one thread per output, keeping the argmax; the backward a
//! gather, one thread per input over the outputs whose argmax it is, summed in output order in
//! plain f32 (no atomics: deterministic). Global average pooling: the forward one block per
//! plane (Kahan per thread, then a tree in shared memory), the backward one thread per element.

use dscl_core::backend::PoolOps;
use dscl_core::desc::{check_global_pool, PoolShape};
use dscl_core::error::ensure;
use dscl_core::Result;

use super::u32_of;
use crate::backend::{block_per, grid_for, launch, CudaBackend};
use crate::kernel_args::{kernel_args, size_t};

kernel_args! {
    /// What the pool kernels read (`PoolArgs` in `kernels/pool.cu`).
    pub(crate) struct PoolArgs {
        /// The outputs (max pool forward), inputs (its backward), planes (global average
        /// forward) or elements (its backward) the launch covers.
        n: u64,
        in_h: u32,
        in_w: u32,
        out_h: u32,
        out_w: u32,
        kernel: u32,
        stride: u32,
        pad: u32,
        /// The global average pool's values per plane.
        spatial: u32,
    }
}

impl PoolArgs {
    /// The max pool kernels' geometry, over `n` items.
    fn max_pool(s: &PoolShape, n: usize) -> Result<Self> {
        let w = |x: usize| u32_of("max_pool2d", x);
        // Window arithmetic adds padding, kernel and stride to a coordinate: that must fit too.
        w(s.in_height
            .max(s.in_width)
            .saturating_add(s.padding.saturating_mul(2))
            .saturating_add(s.kernel)
            .saturating_add(s.stride))?;
        Ok(PoolArgs {
            n: size_t(n),
            in_h: w(s.in_height)?,
            in_w: w(s.in_width)?,
            out_h: w(s.out_height())?,
            out_w: w(s.out_width())?,
            kernel: w(s.kernel)?,
            stride: w(s.stride)?,
            pad: w(s.padding)?,
            spatial: 0,
        })
    }

    fn global_avg(n: usize, spatial: u32) -> Self {
        PoolArgs {
            n: size_t(n),
            spatial,
            ..Self::default()
        }
    }
}

impl PoolOps for CudaBackend {
    fn max_pool2d_forward(
        &self,
        shape: &PoolShape,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        argmax: &mut Self::IndexBuffer,
    ) -> Result<()> {
        shape.check(x.len, y.len, argmax.len)?;
        let outputs = shape.output_len();
        let args = PoolArgs::max_pool(shape, outputs)?;
        ensure(
            shape
                .in_height
                .checked_mul(shape.in_width)
                .is_some_and(|p| u32::try_from(p).is_ok()),
            "max_pool2d",
            "an input plane must have fewer than 2^32 elements (u32 argmax)",
        )?;
        if outputs == 0 {
            return Ok(());
        }
        u32_of("max_pool2d", outputs)?;
        let fault = self.fault.borrow();
        launch!(
            self,
            "max_pool_forward",
            grid_for(outputs),
            [&*fault, &x.slice, &mut y.slice, &mut argmax.slice, &args]
        )
    }

    fn max_pool2d_backward(
        &self,
        shape: &PoolShape,
        grad_y: &Self::Buffer,
        argmax: &Self::IndexBuffer,
        grad_x: &mut Self::Buffer,
    ) -> Result<()> {
        shape.check(grad_x.len, grad_y.len, argmax.len)?;
        let inputs = shape.input_len();
        let args = PoolArgs::max_pool(shape, inputs)?;
        if inputs == 0 {
            return Ok(());
        }
        launch!(
            self,
            "max_pool_backward",
            grid_for(inputs),
            [&grad_y.slice, &argmax.slice, &mut grad_x.slice, &args]
        )
    }

    fn global_avg_pool_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        let what = "global_avg_pool";
        let (planes, _) = check_global_pool(what, x.len, y.len, batch, channels, spatial)?;
        if planes == 0 {
            return Ok(());
        }
        let args = PoolArgs::global_avg(planes, u32_of(what, spatial)?);
        let blocks = planes.min(1 << 16);
        launch!(
            self,
            "gap_forward",
            block_per(what, blocks)?,
            [&x.slice, &mut y.slice, &args]
        )
    }

    fn global_avg_pool_backward(
        &self,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        let what = "global_avg_pool_backward";
        let (_, len) = check_global_pool(what, grad_x.len, grad_y.len, batch, channels, spatial)?;
        if len == 0 {
            return Ok(());
        }
        let args = PoolArgs::global_avg(len, u32_of(what, spatial)?);
        launch!(
            self,
            "gap_backward",
            grid_for(len),
            [&grad_y.slice, &mut grad_x.slice, &args]
        )
    }
}
