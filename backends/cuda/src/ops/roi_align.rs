//! ROI-align with torchvision's semantics (`kernels/roi_align.cu`), forward and backward, one
//! thread per (box, channel, bin), each decoding its box, geometry in f32 in torchvision's
//! expression order. A one-block check first records LabelOutOfRange at the lowest box whose
//! batch index is invalid. The forward averages a bin's bilinear samples, summed in plain f32
//! in sampling order; the backward scatters each share onto the features with float atomics,
//! so the order of the additions onto one element varies between runs.

use dscl_core::backend::RoiAlignOps;
use dscl_core::desc::RoiAlignShape;
use dscl_core::Result;

use super::{launch_match, u32_of};
use crate::backend::{block_per, grid_for, launch, CudaBackend, CudaBuffer};
use crate::kernel_args::kernel_args;

/// Sampling points per bin per axis, capped as in the CPU backend.
const ROI_MAX_GRID: usize = 1 << 16;

kernel_args! {
    /// What the ROI-align kernels read (`RoiAlignArgs` in `kernels/roi_align.cu`).
    pub(crate) struct RoiAlignArgs {
        batch: u32,
        channels: u32,
        height: u32,
        width: u32,
        rois: u32,
        pooled_h: u32,
        pooled_w: u32,
        /// Sampling points per bin per axis, 0 for torchvision's adaptive count.
        sampling_ratio: u32,
        aligned: u32,
        spatial_scale: f32,
    }
}

impl RoiAlignArgs {
    fn of(s: &RoiAlignShape) -> Result<Self> {
        let w = |x: usize| u32_of("roi_align", x);
        w(s.features_len())?;
        w(s.output_len())?;
        Ok(RoiAlignArgs {
            batch: w(s.batch)?,
            channels: w(s.channels)?,
            height: w(s.height)?,
            width: w(s.width)?,
            rois: w(s.num_rois)?,
            pooled_h: w(s.pooled_h)?,
            pooled_w: w(s.pooled_w)?,
            sampling_ratio: w(s.sampling_ratio.min(ROI_MAX_GRID))?,
            aligned: u32::from(s.aligned),
            spatial_scale: s.spatial_scale as f32,
        })
    }
}

/// Records LabelOutOfRange at the lowest box whose batch index is invalid.
fn check_boxes(be: &CudaBackend, boxes: &CudaBuffer<f32>, args: &RoiAlignArgs) -> Result<()> {
    let fault = be.fault.borrow();
    launch!(
        be,
        "roi_check",
        block_per("roi_align", 1)?,
        [&*fault, &boxes.slice, args]
    )
}

/// The two passes: the same buffers around the boxes, in other roles, and another kernel.
#[derive(Clone, Copy)]
enum Pass {
    Forward,
    Backward,
}

impl RoiAlignOps for CudaBackend {
    fn roi_align_forward(
        &self,
        shape: &RoiAlignShape,
        features: &Self::Buffer,
        boxes: &Self::Buffer,
        output: &mut Self::Buffer,
    ) -> Result<()> {
        run_pass(self, Pass::Forward, shape, features, boxes, output)
    }

    fn roi_align_backward(
        &self,
        shape: &RoiAlignShape,
        grad_output: &Self::Buffer,
        boxes: &Self::Buffer,
        grad_features: &mut Self::Buffer,
    ) -> Result<()> {
        run_pass(
            self,
            Pass::Backward,
            shape,
            grad_output,
            boxes,
            grad_features,
        )
    }
}

/// One pass: its buffers checked, then its boxes, then its kernel. `input`, `boxes` and `output`
/// are in the kernel's order: (features, boxes) -> output forward, (grad_output, boxes) ->
/// grad_features backward; either way one thread per element of the forward's output.
fn run_pass(
    be: &CudaBackend,
    pass: Pass,
    shape: &RoiAlignShape,
    input: &CudaBuffer<f32>,
    boxes: &CudaBuffer<f32>,
    output: &mut CudaBuffer<f32>,
) -> Result<()> {
    // The shape checks the buffers by their role in the forward pass: features, boxes, output.
    let (features_len, output_len) = match pass {
        Pass::Forward => (input.len, output.len),
        Pass::Backward => (output.len, input.len),
    };
    shape.check(features_len, boxes.len, output_len)?;
    if shape.num_rois == 0 {
        return Ok(());
    }
    let args = RoiAlignArgs::of(shape)?;
    check_boxes(be, boxes, &args)?;
    launch_match!(
        be,
        match pass {
            Pass::Forward => "roi_forward",
            Pass::Backward => "roi_backward",
        },
        grid_for(shape.output_len()),
        [&input.slice, &boxes.slice, &mut output.slice, &args]
    )
}
