//! ROI-align (torchvision semantics): PBSD's patch features.

use super::product;
use super::MemoryOps;
use crate::error::{check_len, ensure, Result};

/// ROI-align (torchvision `roi_align`) over features `[batch, channels, height, width]`.
/// Boxes are rows of 5 values `(batch_index, x1, y1, x2, y2)` in input-image pixels;
/// output is `[num_rois, channels, pooled_h, pooled_w]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoiAlignShape {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub num_rois: usize,
    pub pooled_h: usize,
    pub pooled_w: usize,
    /// Multiplies box coordinates into feature-map coordinates (1 / backbone stride).
    pub spatial_scale: f64,
    /// Sampling points per bin along each axis; 0 = adaptive: ceil(roi size / pooled size).
    pub sampling_ratio: usize,
    /// `true` shifts box coordinates by -0.5 pixel (torchvision `aligned=True`); DSCL uses
    /// `false`, where a box is also at least 1x1 feature cell.
    pub aligned: bool,
}

impl RoiAlignShape {
    pub fn features_len(&self) -> usize {
        product(&[self.batch, self.channels, self.height, self.width])
    }
    pub fn boxes_len(&self) -> usize {
        self.num_rois.saturating_mul(5)
    }
    pub fn output_len(&self) -> usize {
        product(&[self.num_rois, self.channels, self.pooled_h, self.pooled_w])
    }
    pub fn check(&self, features_len: usize, boxes_len: usize, output_len: usize) -> Result<()> {
        ensure(
            self.pooled_h >= 1 && self.pooled_w >= 1,
            "roi_align",
            "pooled size must be at least 1x1",
        )?;
        ensure(
            self.spatial_scale > 0.0 && self.spatial_scale.is_finite(),
            "roi_align",
            "spatial_scale must be positive",
        )?;
        check_len("roi_align features", features_len, self.features_len())?;
        check_len("roi_align boxes", boxes_len, self.boxes_len())?;
        check_len("roi_align output", output_len, self.output_len())
    }
}

pub trait RoiAlignOps: MemoryOps {
    /// torchvision `roi_align`: for each box and bin, the mean of bilinear samples on a
    /// `sampling_ratio` (or adaptive) grid; samples outside `[-1, size]` contribute 0, those in
    /// `[-1, 0)` are clamped to 0. With `aligned = false` the box is scaled without the
    /// half-pixel shift and forced to at least 1x1. A batch index outside `0..batch` (or not a
    /// whole number) is recorded as `LabelOutOfRange` at the box index and that box's output
    /// is 0; samples at non-finite coordinates count as outside the map (they add 0).
    fn roi_align_forward(
        &self,
        shape: &RoiAlignShape,
        features: &Self::Buffer,
        boxes: &Self::Buffer,
        output: &mut Self::Buffer,
    ) -> Result<()>;

    /// Scatters `grad_output` back onto `grad_features` with the same bilinear weights
    /// (accumulates).
    fn roi_align_backward(
        &self,
        shape: &RoiAlignShape,
        grad_output: &Self::Buffer,
        boxes: &Self::Buffer,
        grad_features: &mut Self::Buffer,
    ) -> Result<()>;
}
