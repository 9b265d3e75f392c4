//! ROI-align (torchvision semantics): PBSD's patch features.

use super::MemoryOps;
use crate::desc::RoiAlignShape;
use crate::error::Result;

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
