//! ROI-align as torchvision's CPU kernel (`torchvision.ops.roi_align`), forward and backward
//! sharing one sampling routine so the backward scatters with exactly the forward's weights.

use super::fault::FaultSlot;
use super::memory::alloc_zeroed;
use super::ReferenceBackend;
use crate::desc::RoiAlignShape;
use crate::element::Element;
use crate::error::Result;

/// One box in feature-map coordinates with its sampling grid.
struct Roi {
    batch_index: usize,
    start_h: f64,
    start_w: f64,
    bin_h: f64,
    bin_w: f64,
    grid_h: usize,
    grid_w: usize,
    /// Sampling points per bin, at least 1 (an empty grid averages nothing into 0).
    count: f64,
}

/// Samples per bin along one axis: the fixed ratio, or adaptive `ceil(roi size / bins)`
/// (none when the box is empty, as only `aligned = true` allows).
fn grid_size(sampling_ratio: usize, roi_size: f64, bins: usize) -> usize {
    if sampling_ratio > 0 {
        return sampling_ratio;
    }
    let points = libm::ceil(roi_size / bins as f64);
    // The float -> int cast saturates, and NaN (a non-finite box) becomes 0 points.
    if points >= 1.0 {
        points as usize
    } else {
        0
    }
}

/// Decodes box `r`; `None` (after recording `LabelOutOfRange` at the box index) when its batch
/// index, truncated toward zero as torchvision's `int` cast does, is outside `0..batch`.
fn decode_roi<T: Element>(
    shape: &RoiAlignShape,
    boxes: &[T],
    r: usize,
    faults: &FaultSlot,
) -> Option<Roi> {
    let row = &boxes[r * 5..r * 5 + 5];
    let raw_index = libm::trunc(row[0].widen());
    if !(raw_index >= 0.0 && raw_index < shape.batch as f64) {
        // Negative and NaN indices report u32::MAX: no valid label looks like them.
        let reported = if raw_index >= 0.0 {
            raw_index as u32
        } else {
            u32::MAX
        };
        faults.label_out_of_range(r, reported);
        return None;
    }
    let offset = if shape.aligned { 0.5 } else { 0.0 };
    let scale = shape.spatial_scale;
    let start_w = row[1].widen() * scale - offset;
    let start_h = row[2].widen() * scale - offset;
    let end_w = row[3].widen() * scale - offset;
    let end_h = row[4].widen() * scale - offset;
    let mut roi_w = end_w - start_w;
    let mut roi_h = end_h - start_h;
    if !shape.aligned {
        // torchvision forces malformed boxes to 1x1 (std::max keeps a NaN, as f64::max would not).
        if roi_w < 1.0 {
            roi_w = 1.0;
        }
        if roi_h < 1.0 {
            roi_h = 1.0;
        }
    }
    let grid_h = grid_size(shape.sampling_ratio, roi_h, shape.pooled_h);
    let grid_w = grid_size(shape.sampling_ratio, roi_w, shape.pooled_w);
    Some(Roi {
        batch_index: raw_index as usize,
        start_h,
        start_w,
        bin_h: roi_h / shape.pooled_h as f64,
        bin_w: roi_w / shape.pooled_w as f64,
        grid_h,
        grid_w,
        count: grid_h.saturating_mul(grid_w).max(1) as f64,
    })
}

/// The four taps of a bilinear sample: positions within a `height x width` plane and weights.
struct Bilinear {
    positions: [usize; 4],
    weights: [f64; 4],
}

/// torchvision's `bilinear_interpolate`: a point beyond `[-1, size]` on either axis contributes
/// nothing; coordinates in `[-1, 0]` clamp to 0; at or past the last row/column both taps
/// collapse onto it.
fn bilinear(height: usize, width: usize, y: f64, x: f64) -> Option<Bilinear> {
    let inside = |v: f64, size: usize| v >= -1.0 && v <= size as f64;
    if height == 0 || width == 0 || !inside(y, height) || !inside(x, width) {
        return None;
    }
    let (y_low, y_high, ly) = taps(y, height);
    let (x_low, x_high, lx) = taps(x, width);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    Some(Bilinear {
        positions: [
            y_low * width + x_low,
            y_low * width + x_high,
            y_high * width + x_low,
            y_high * width + x_high,
        ],
        weights: [hy * hx, hy * lx, ly * hx, ly * lx],
    })
}

/// Low tap, high tap and fractional distance from the low tap along one axis, for a
/// coordinate already known to lie in `[-1, size]`.
fn taps(coordinate: f64, size: usize) -> (usize, usize, f64) {
    let clamped = if coordinate <= 0.0 { 0.0 } else { coordinate };
    let low = clamped as usize;
    if low >= size - 1 {
        (size - 1, size - 1, 0.0)
    } else {
        (low, low + 1, clamped - low as f64)
    }
}

/// Calls `visit(bin, tap)` for every bilinear tap of every sample of every bin of `roi`, where
/// `bin = ph * pooled_w + pw`. Sample positions follow torchvision's expression order.
fn for_each_tap(shape: &RoiAlignShape, roi: &Roi, mut visit: impl FnMut(usize, &Bilinear)) {
    for ph in 0..shape.pooled_h {
        for pw in 0..shape.pooled_w {
            bin_taps(shape, roi, ph, pw, |sample| {
                visit(ph * shape.pooled_w + pw, sample)
            });
        }
    }
}

/// The bilinear samples of bin `(ph, pw)` that fall on the map.
fn bin_taps(
    shape: &RoiAlignShape,
    roi: &Roi,
    ph: usize,
    pw: usize,
    mut visit: impl FnMut(&Bilinear),
) {
    for iy in 0..roi.grid_h {
        let y =
            roi.start_h + ph as f64 * roi.bin_h + (iy as f64 + 0.5) * roi.bin_h / roi.grid_h as f64;
        for ix in 0..roi.grid_w {
            let x = roi.start_w
                + pw as f64 * roi.bin_w
                + (ix as f64 + 0.5) * roi.bin_w / roi.grid_w as f64;
            if let Some(sample) = bilinear(shape.height, shape.width, y, x) {
                visit(&sample);
            }
        }
    }
}

/// `output[r][c][ph][pw]` = the mean over the bin's sampling grid of the bilinear samples of
/// `features[batch_index][c]` (points outside the map count as 0 but still in the mean).
/// A box with an invalid batch index outputs 0.
pub fn roi_align_forward<T: Element>(
    shape: &RoiAlignShape,
    features: &[T],
    boxes: &[T],
    output: &mut [T],
    faults: &FaultSlot,
) -> Result<()> {
    shape.check(features.len(), boxes.len(), output.len())?;
    let plane = shape.height * shape.width;
    let bins = shape.pooled_h * shape.pooled_w;
    for r in 0..shape.num_rois {
        let roi = decode_roi(shape, boxes, r, faults);
        for c in 0..shape.channels {
            let out_base = (r * shape.channels + c) * bins;
            let out = &mut output[out_base..out_base + bins];
            let Some(roi) = &roi else {
                out.fill(T::zero());
                continue;
            };
            let base = (roi.batch_index * shape.channels + c) * plane;
            let input = &features[base..base + plane];
            for (bin, out) in out.iter_mut().enumerate() {
                let mut sum = 0.0;
                bin_taps(
                    shape,
                    roi,
                    bin / shape.pooled_w,
                    bin % shape.pooled_w,
                    |sample| {
                        for (&position, &weight) in sample.positions.iter().zip(&sample.weights) {
                            sum += weight * input[position].widen();
                        }
                    },
                );
                *out = T::from_f64(sum / roi.count);
            }
        }
    }
    Ok(())
}

/// `grad_features[batch_index][c][tap] += grad_output[r][c][bin] * weight / count` for every
/// tap the forward read (accumulates; summed in f64 before the single rounding per element).
/// A box with an invalid batch index is recorded as in the forward and contributes nothing.
pub fn roi_align_backward<T: Element>(
    shape: &RoiAlignShape,
    grad_output: &[T],
    boxes: &[T],
    grad_features: &mut [T],
    faults: &FaultSlot,
) -> Result<()> {
    shape.check(grad_features.len(), boxes.len(), grad_output.len())?;
    let plane = shape.height * shape.width;
    let bins = shape.pooled_h * shape.pooled_w;
    let features_len = shape.features_len();
    let mut sums = alloc_zeroed::<f64>(features_len)?;
    for (sum, &g) in sums.iter_mut().zip(&grad_features[..features_len]) {
        *sum = g.widen();
    }
    for r in 0..shape.num_rois {
        let Some(roi) = decode_roi(shape, boxes, r, faults) else {
            continue;
        };
        for c in 0..shape.channels {
            let base = (roi.batch_index * shape.channels + c) * plane;
            let grad_bins = &grad_output[(r * shape.channels + c) * bins..][..bins];
            for_each_tap(shape, &roi, |bin, sample| {
                let share = grad_bins[bin].widen() / roi.count;
                for (&position, &weight) in sample.positions.iter().zip(&sample.weights) {
                    sums[base + position] += share * weight;
                }
            });
        }
    }
    for (g, &sum) in grad_features.iter_mut().zip(&sums) {
        *g = T::from_f64(sum);
    }
    Ok(())
}

impl<T: Element> crate::backend::RoiAlignOps for ReferenceBackend<T> {
    fn roi_align_forward(
        &self,
        shape: &RoiAlignShape,
        features: &Self::Buffer,
        boxes: &Self::Buffer,
        output: &mut Self::Buffer,
    ) -> Result<()> {
        roi_align_forward(shape, features, boxes, output, &self.faults)
    }

    fn roi_align_backward(
        &self,
        shape: &RoiAlignShape,
        grad_output: &Self::Buffer,
        boxes: &Self::Buffer,
        grad_features: &mut Self::Buffer,
    ) -> Result<()> {
        roi_align_backward(shape, grad_output, boxes, grad_features, &self.faults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FaultKind;

    fn shape(height: usize, width: usize, num_rois: usize, aligned: bool) -> RoiAlignShape {
        RoiAlignShape {
            batch: 1,
            channels: 1,
            height,
            width,
            num_rois,
            pooled_h: 1,
            pooled_w: 1,
            spatial_scale: 1.0,
            sampling_ratio: 0,
            aligned,
        }
    }

    #[test]
    fn whole_map_box_averages_bilinear_samples() {
        // A 2x2 box over a 3x3 ramp f(y, x) = x + 3y: 2x2 samples at (0.5 | 1.5)^2, each
        // bilinear and hence exact on a linear function; their mean is f(1, 1) = 4.
        let s = shape(3, 3, 1, false);
        let features: [f64; 9] = core::array::from_fn(|e| e as f64);
        let mut out = [0.0];
        let faults = FaultSlot::new();
        roi_align_forward(&s, &features, &[0.0, 0.0, 0.0, 2.0, 2.0], &mut out, &faults).unwrap();
        assert!((out[0] - 4.0).abs() < 1e-15);
        // The backward spreads 1 over the 3x3 taps of the four samples, 1/4 each.
        let mut grad = [0.0f64; 9];
        roi_align_backward(&s, &[1.0], &[0.0, 0.0, 0.0, 2.0, 2.0], &mut grad, &faults).unwrap();
        let expected = [1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0].map(|v: f64| v / 16.0);
        for (g, e) in grad.iter().zip(expected) {
            assert!((g - e).abs() < 1e-15);
        }
        assert_eq!(faults.take(), None);
    }

    #[test]
    fn samples_beyond_the_map_count_as_zero_but_stay_in_the_mean() {
        // The box x in [1, 3] over a 1x2 map of ones is 2 wide: two samples per bin, at
        // x = 1.5 (clamped onto the last column) and x = 2.5 (beyond the width: 0).
        let s = RoiAlignShape {
            pooled_w: 1,
            ..shape(1, 2, 1, false)
        };
        let mut out = [0.0];
        let faults = FaultSlot::new();
        roi_align_forward(
            &s,
            &[1.0f64, 1.0],
            &[0.0, 1.0, 0.0, 3.0, 1.0],
            &mut out,
            &faults,
        )
        .unwrap();
        assert!((out[0] - 0.5).abs() < 1e-15);
    }

    #[test]
    fn bad_batch_index_is_a_fault_and_outputs_zero() {
        let s = shape(2, 2, 2, true);
        let mut out = [7.0f64; 2];
        let faults = FaultSlot::new();
        let boxes = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0];
        roi_align_forward(&s, &[1.0; 4], &boxes, &mut out, &faults).unwrap();
        assert_eq!(out[1], 0.0);
        let fault = faults.take().unwrap();
        assert_eq!(
            (fault.kind, fault.index, fault.value),
            (FaultKind::LabelOutOfRange, 1, 1)
        );
    }
}
