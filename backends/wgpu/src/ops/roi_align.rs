//! ROI-align, torchvision semantics (`torchvision.ops.roi_align`), forward and backward.
//!
//! Both passes run one invocation per (box, channel, bin), each decoding its box; a one-workgroup
//! check kernel first records `LabelOutOfRange` at the lowest invalid box, as the CPU backend
//! reports it. The backward scatters with a compare-and-swap loop on the f32 bits of
//! `grad_features` (see `roi_align_backward.wgsl` for why).
//!
//! Features and outputs larger than one binding are bound in runs (images of the feature map,
//! boxes of the output): one dispatch per pair of runs, each box's work done in the dispatch
//! whose feature run holds its image.

use dscl_core::backend::RoiAlignOps;
use dscl_core::desc::RoiAlignShape;
use dscl_core::Result;

use super::{binding_align, f32_bits, groups, image_runs, word};
use crate::buffer::Window;
use crate::kernel::{kernel, Kernel};
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

/// The words of `roi_align_common.wgsl` up to the runs' (items and runs are set per dispatch).
fn words(what: &'static str, shape: &RoiAlignShape) -> Result<[u32; 16]> {
    word(what, shape.features_len())?;
    word(what, shape.boxes_len())?;
    word(what, shape.output_len())?;
    Ok([
        0,
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
        0,
        0,
        0,
        0,
        0,
    ])
}

/// Runs `kernel` over every pair of a box run (of `per_box` output elements each) and an image
/// run of the feature map, after the box check on the first pair's bindings.
fn dispatch_runs(
    be: &WgpuBackend,
    kernel: &'static Kernel,
    what: &'static str,
    shape: &RoiAlignShape,
    outputs: &WgpuBuffer<f32>,
    boxes: &WgpuBuffer<f32>,
    features: &WgpuBuffer<f32>,
) -> Result<()> {
    let mut words = words(what, shape)?;
    let per_box = shape.channels * shape.pooled_h * shape.pooled_w;
    let image = shape.channels * shape.height * shape.width;
    let align = binding_align(be);
    let mut checked = false;
    // A feature map of no images is one empty run, so invalid boxes still get their zeros.
    let feature_runs = image_runs(be, what, shape.batch, &[image])?;
    for (first_box, box_count) in image_runs(be, what, shape.num_rois, &[per_box])? {
        let (out, out_at) = outputs.window(first_box * per_box, box_count * per_box, align);
        for (first_image, image_count) in feature_runs.clone() {
            let (feat, feat_at) = features.window(first_image * image, image_count * image, align);
            let bindings: [Window<'_>; 3] = if std::ptr::eq(kernel, &ROI_FORWARD) {
                [feat, boxes.whole(), out]
            } else {
                [out, boxes.whole(), feat]
            };
            if !checked {
                be.rec()
                    .dispatch(&ROI_CHECK, &bindings, &words, [1, 1, 1])?;
                checked = true;
            }
            let items = box_count * per_box;
            words[0] = word(what, items)?;
            words[11] = word(what, first_box)?;
            words[12] = word(what, out_at)?;
            words[13] = word(what, first_image)?;
            words[14] = word(what, image_count)?;
            words[15] = word(what, feat_at)?;
            be.rec()
                .dispatch(kernel, &bindings, &words, groups(items, kernel.workgroup)?)?;
        }
    }
    Ok(())
}

impl RoiAlignOps for WgpuBackend {
    fn roi_align_forward(
        &self,
        shape: &RoiAlignShape,
        features: &Self::Buffer,
        boxes: &Self::Buffer,
        output: &mut Self::Buffer,
    ) -> Result<()> {
        shape.check(features.len, boxes.len, output.len)?;
        if shape.num_rois == 0 {
            return Ok(());
        }
        let what = "roi_align_forward";
        dispatch_runs(self, &ROI_FORWARD, what, shape, output, boxes, features)
    }

    fn roi_align_backward(
        &self,
        shape: &RoiAlignShape,
        grad_output: &Self::Buffer,
        boxes: &Self::Buffer,
        grad_features: &mut Self::Buffer,
    ) -> Result<()> {
        shape.check(grad_features.len, boxes.len, grad_output.len)?;
        if shape.num_rois == 0 {
            return Ok(());
        }
        let what = "roi_align_backward";
        dispatch_runs(
            self,
            &ROI_BACKWARD,
            what,
            shape,
            grad_output,
            boxes,
            grad_features,
        )
    }
}
