//! ROI-align, torchvision semantics (`torchvision.ops.roi_align`), forward and backward.
//!
//! Both passes run one invocation per (box, channel, bin), each decoding its box; a one-workgroup
//! check kernel first records `LabelOutOfRange` at the lowest invalid box, as the CPU backend
//! reports it. The backward scatters with a compare-and-swap loop on the f32 bits of
//! `grad_features` (see `roi_align_backward.wgsl` for why).

use dscl_core::desc::RoiAlignShape;
use dscl_core::Result;

use super::{f32_bits, groups, word};
use crate::kernel::kernel;
use crate::{WgpuBackend, WgpuBuffer};

const COMMON: &str = include_str!("../shaders/roi_align_common.wgsl");
const FORWARD: &str = concat!(
    include_str!("../shaders/roi_align_common.wgsl"),
    include_str!("../shaders/roi_align_forward.wgsl")
);
const BACKWARD: &str = concat!(
    include_str!("../shaders/roi_align_common.wgsl"),
    include_str!("../shaders/roi_align_backward.wgsl")
);

// The check reads only the boxes (binding 1); it takes the same three bindings as the pass it
// precedes, so either pass's bind group serves it.
kernel!(ROI_CHECK, COMMON, "roi_check", [Read, Read, ReadWrite], 256);
kernel!(
    ROI_FORWARD,
    FORWARD,
    "roi_forward",
    [Read, Read, ReadWrite],
    256
);
kernel!(
    ROI_BACKWARD,
    BACKWARD,
    "roi_backward",
    [Read, Read, ReadWrite],
    256
);

/// Sampling points per bin per axis, capped as in the CPU backend (and the shaders' adaptive
/// grid).
const MAX_GRID: usize = 1 << 16;

/// The words of `roi_align_common.wgsl`, with `items` = outputs.
fn words(what: &'static str, shape: &RoiAlignShape) -> Result<[u32; 11]> {
    word(what, shape.features_len())?;
    word(what, shape.boxes_len())?;
    Ok([
        word(what, shape.output_len())?,
        word(what, shape.batch)?,
        word(what, shape.channels)?,
        word(what, shape.height)?,
        word(what, shape.width)?,
        word(what, shape.num_rois)?,
        word(what, shape.pooled_h)?,
        word(what, shape.pooled_w)?,
        f32_bits(shape.spatial_scale),
        word(what, shape.sampling_ratio.min(MAX_GRID))?,
        u32::from(shape.aligned),
    ])
}

pub(crate) fn forward(
    be: &WgpuBackend,
    shape: &RoiAlignShape,
    features: &WgpuBuffer<f32>,
    boxes: &WgpuBuffer<f32>,
    output: &mut WgpuBuffer<f32>,
) -> Result<()> {
    shape.check(features.len, boxes.len, output.len)?;
    if shape.num_rois == 0 {
        return Ok(());
    }
    let words = words("roi_align_forward", shape)?;
    let bindings = [features.whole(), boxes.whole(), output.whole()];
    be.rec()
        .dispatch(&ROI_CHECK, &bindings, &words, [1, 1, 1])?;
    be.rec().dispatch(
        &ROI_FORWARD,
        &bindings,
        &words,
        groups(shape.output_len(), ROI_FORWARD.workgroup)?,
    )
}

pub(crate) fn backward(
    be: &WgpuBackend,
    shape: &RoiAlignShape,
    grad_output: &WgpuBuffer<f32>,
    boxes: &WgpuBuffer<f32>,
    grad_features: &mut WgpuBuffer<f32>,
) -> Result<()> {
    shape.check(grad_features.len, boxes.len, grad_output.len)?;
    if shape.num_rois == 0 {
        return Ok(());
    }
    let words = words("roi_align_backward", shape)?;
    let bindings = [grad_output.whole(), boxes.whole(), grad_features.whole()];
    be.rec()
        .dispatch(&ROI_CHECK, &bindings, &words, [1, 1, 1])?;
    be.rec().dispatch(
        &ROI_BACKWARD,
        &bindings,
        &words,
        groups(shape.output_len(), ROI_BACKWARD.workgroup)?,
    )
}
