//! ROI-align as PBSD uses it: 2x2 bins, adaptive sampling, `aligned = false`, with the box
//! coordinates in pixels of the query image and the scale 1 / backbone stride.

use crate::backend::Backend;
use crate::desc::RoiAlignShape;
use crate::error::{ensure, Result};

/// PBSD's teacher pooling: each box's 2x2 ROI-align output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoiAlign {
    pub shape: RoiAlignShape,
}

impl RoiAlign {
    /// ROI-align of `num_rois` boxes over `[batch, channels, height, width]` features that are
    /// `stride` times smaller than the image the boxes are given in.
    pub fn new(
        batch: usize,
        channels: usize,
        height: usize,
        width: usize,
        num_rois: usize,
        stride: usize,
    ) -> Result<Self> {
        ensure(stride >= 1, "roi_align stride", "must be at least 1")?;
        Ok(RoiAlign {
            shape: RoiAlignShape {
                batch,
                channels,
                height,
                width,
                num_rois,
                pooled_h: 2,
                pooled_w: 2,
                spatial_scale: 1.0 / stride as f64,
                sampling_ratio: 0,
                aligned: false,
            },
        })
    }

    /// `output[r] = roi_align(features, boxes[r])`, `[num_rois, channels, 2, 2]`; boxes are rows
    /// `(batch_index, x1, y1, x2, y2)`.
    pub fn forward<B: Backend>(
        &self,
        backend: &B,
        features: &B::Buffer,
        boxes: &B::Buffer,
        output: &mut B::Buffer,
    ) -> Result<()> {
        backend.roi_align_forward(&self.shape, features, boxes, output)
    }

    /// `grad_features += ` the bilinear scatter of `grad_output` (accumulates).
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        grad_output: &B::Buffer,
        boxes: &B::Buffer,
        grad_features: &mut B::Buffer,
    ) -> Result<()> {
        backend.roi_align_backward(&self.shape, grad_output, boxes, grad_features)
    }
}
