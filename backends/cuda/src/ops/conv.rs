//! conv2d over NCHW (weights `[out_c, in_c, kh, kw]`, one stride and padding for both axes):
//! forward, data gradient (written) and filter gradient (added to the caller's).
//!
//! Each pass goes to cuDNN first, where it is installed and takes the shape (`conv_cudnn.rs`,
//! at the backend's precision); otherwise the direct kernels of `kernels/conv.cu` run, in f32:
//! one thread per output element, forward and data gradient summing their taps in plain f32 in
//! (channel, kh, kw) order, the filter gradient, a reduction over the whole batch, with Kahan
//! compensation before its one addition to the existing gradient.

use dscl_core::backend::ConvOps;
use dscl_core::desc::Conv2dShape;
use dscl_core::Result;

use super::{launch_match, u32_of};
use crate::backend::{grid_for, too_large, CudaBackend, CudaBuffer};
use crate::conv_cudnn::ConvPass;
use crate::kernel_args::kernel_args;

kernel_args! {
    /// The shape, as every conv kernel takes it (`ConvArgs` in `kernels/conv.cu`).
    pub(crate) struct ConvArgs {
        batch: u32,
        in_c: u32,
        in_h: u32,
        in_w: u32,
        out_c: u32,
        kernel_h: u32,
        kernel_w: u32,
        stride: u32,
        pad: u32,
        out_h: u32,
        out_w: u32,
    }
}

impl ConvArgs {
    /// The kernels index within one plane (`ih * in_w + iw`, `oh * out_w + ow`,
    /// `kh * kernel_w + kw`) and step through the padding (`oh * stride + kh - pad`) in 32-bit
    /// arithmetic, so those products and sums must fit a `u32` too; only the offsets of whole
    /// planes are 64-bit.
    fn of(s: &Conv2dShape) -> Result<Self> {
        let w = |x: usize| u32_of("conv2d", x);
        let product = |a: usize, b: usize| a.checked_mul(b).map_or(Err(too_large("conv2d")), w);
        product(s.in_height, s.in_width)?;
        product(s.out_height(), s.out_width())?;
        product(s.kernel_h, s.kernel_w)?;
        w(s.in_height
            .max(s.in_width)
            .saturating_add(s.padding.saturating_mul(2))
            .saturating_add(s.kernel_h.max(s.kernel_w))
            .saturating_add(s.stride))?;
        Ok(ConvArgs {
            batch: w(s.batch)?,
            in_c: w(s.in_channels)?,
            in_h: w(s.in_height)?,
            in_w: w(s.in_width)?,
            out_c: w(s.out_channels)?,
            kernel_h: w(s.kernel_h)?,
            kernel_w: w(s.kernel_w)?,
            stride: w(s.stride)?,
            pad: w(s.padding)?,
            out_h: w(s.out_height())?,
            out_w: w(s.out_width())?,
        })
    }
}

impl ConvOps for CudaBackend {
    fn conv2d_workspace_len(&self, shape: &Conv2dShape) -> usize {
        self.conv_workspace_len(shape)
    }

    fn conv2d_forward(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        weight: &Self::Buffer,
        output: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        let pass = ConvPass::Forward;
        self.conv_pass(pass, shape, [input, weight], output, workspace)
    }

    fn conv2d_backward_data(
        &self,
        shape: &Conv2dShape,
        grad_output: &Self::Buffer,
        weight: &Self::Buffer,
        grad_input: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        let pass = ConvPass::BackwardData;
        self.conv_pass(pass, shape, [grad_output, weight], grad_input, workspace)
    }

    fn conv2d_backward_filter(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        grad_output: &Self::Buffer,
        grad_weight: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        let pass = ConvPass::BackwardFilter;
        self.conv_pass(pass, shape, [input, grad_output], grad_weight, workspace)
    }
}

impl CudaBackend {
    /// One pass: its buffers checked, then cuDNN where it takes the shape, else the direct
    /// kernel. `inputs` and `output` are in the kernel's order: (input, weight) -> output
    /// forward, (grad_output, weight) -> grad_input, (input, grad_output) -> grad_weight.
    fn conv_pass(
        &self,
        pass: ConvPass,
        shape: &Conv2dShape,
        inputs: [&CudaBuffer<f32>; 2],
        output: &mut CudaBuffer<f32>,
        workspace: &mut CudaBuffer<f32>,
    ) -> Result<()> {
        let [a, b] = inputs;
        // The shape checks the buffers by their role in the forward pass: input, weight, output.
        let (input_len, weight_len, output_len) = match pass {
            ConvPass::Forward => (a.len, b.len, output.len),
            ConvPass::BackwardData => (output.len, b.len, a.len),
            ConvPass::BackwardFilter => (a.len, output.len, b.len),
        };
        shape.check(input_len, weight_len, output_len)?;
        let args = ConvArgs::of(shape)?;
        let n = match pass {
            ConvPass::Forward => shape.output_len(),
            ConvPass::BackwardData => shape.input_len(),
            ConvPass::BackwardFilter => shape.weight_len(),
        };
        if n == 0 {
            return Ok(());
        }
        if self.cudnn_conv(pass, shape, a, b, output, workspace)? {
            return Ok(());
        }
        launch_match!(
            self,
            match pass {
                ConvPass::Forward => "conv2d_forward",
                ConvPass::BackwardData => "conv2d_backward_data",
                ConvPass::BackwardFilter => "conv2d_backward_filter",
            },
            grid_for(n),
            [&a.slice, &b.slice, &mut output.slice, &args]
        )
    }
}
