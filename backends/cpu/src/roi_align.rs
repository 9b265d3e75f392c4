//! ROI-align, torchvision semantics (`torchvision.ops.roi_align`), forward and backward.
//!
//! For each box `(batch_index, x1, y1, x2, y2)`: coordinates times `spatial_scale` (minus half a
//! pixel when `aligned`); without `aligned` the box is at least 1x1; each of the
//! `pooled_h x pooled_w` bins averages a `grid_h x grid_w` grid of bilinear samples
//! (`sampling_ratio`, or adaptive `ceil(roi size / pooled size)`), the count being at least 1.
//! A sample with `y < -1`, `y > height`, `x < -1` or `x > width` contributes 0; coordinates
//! `<= 0` clamp to 0 and those at or past the last row/column clamp to it.
//! Geometry is computed in f64 (so the adaptive grid size matches an f64 oracle exactly).
//!
//! The forward pass is threaded over boxes; the backward pass over images (each task scatters
//! the boxes of its own image, so no two tasks write the same gradient).

use dscl_core::backend::RoiAlignOps;
use dscl_core::desc::RoiAlignShape;
use dscl_core::{Fault, FaultKind, Result};

use crate::parallel::{unit, Par, Rows};
use crate::CpuBackend;

/// Sampling points per bin along one axis are capped here, so that an absurd box cannot make a
/// kernel loop for hours (torchvision has no cap; no real box comes near it).
const MAX_GRID: usize = 1 << 16;

/// The batch index of a box (torchvision truncates the float toward zero), or the value the
/// fault reports: the index, or `u32::MAX` for a negative or NaN one.
fn batch_index(v: f32, batch: usize) -> core::result::Result<usize, u32> {
    if v.is_nan() || v <= -1.0 {
        return Err(u32::MAX);
    }
    // Saturating float -> int cast: truncates toward zero, -0.x -> 0, +inf -> u64::MAX.
    let t = v as u64;
    if t < batch as u64 {
        Ok(t as usize)
    } else {
        Err(u32::try_from(t).unwrap_or(u32::MAX))
    }
}

/// The first box whose batch index is invalid.
fn first_bad_box(shape: &RoiAlignShape, boxes: &[f32]) -> Option<Fault> {
    (0..shape.num_rois).find_map(|r| match batch_index(boxes[r * 5], shape.batch) {
        Ok(_) => None,
        Err(value) => Some(Fault {
            kind: FaultKind::LabelOutOfRange,
            index: r,
            value,
        }),
    })
}

/// One box's sampling grid in feature coordinates.
struct Geometry {
    start_h: f64,
    start_w: f64,
    bin_h: f64,
    bin_w: f64,
    grid_h: usize,
    grid_w: usize,
    /// Samples per bin (at least 1).
    count: f64,
}

impl Geometry {
    fn new(shape: &RoiAlignShape, b: &[f32]) -> Geometry {
        let offset = if shape.aligned { 0.5 } else { 0.0 };
        let sc = shape.spatial_scale;
        let start_w = b[1] as f64 * sc - offset;
        let start_h = b[2] as f64 * sc - offset;
        let end_w = b[3] as f64 * sc - offset;
        let end_h = b[4] as f64 * sc - offset;
        let mut roi_w = end_w - start_w;
        let mut roi_h = end_h - start_h;
        if !shape.aligned {
            // As torchvision's std::max: a NaN size stays NaN (and gets no samples).
            if roi_w < 1.0 {
                roi_w = 1.0;
            }
            if roi_h < 1.0 {
                roi_h = 1.0;
            }
        }
        let (ph, pw) = (shape.pooled_h as f64, shape.pooled_w as f64);
        let adaptive = |size: f64, pooled: f64| libm::ceil(size / pooled);
        let (grid_h, grid_w) = if shape.sampling_ratio > 0 {
            (shape.sampling_ratio, shape.sampling_ratio)
        } else {
            (
                (adaptive(roi_h, ph) as usize).min(MAX_GRID),
                (adaptive(roi_w, pw) as usize).min(MAX_GRID),
            )
        };
        let grid_h = grid_h.min(MAX_GRID);
        let grid_w = grid_w.min(MAX_GRID);
        Geometry {
            start_h,
            start_w,
            bin_h: roi_h / ph,
            bin_w: roi_w / pw,
            grid_h,
            grid_w,
            count: (grid_h * grid_w).max(1) as f64,
        }
    }

    /// Calls `f(bin, sample)` for every in-range sample of every bin.
    fn for_each_sample(&self, shape: &RoiAlignShape, mut f: impl FnMut(usize, &Sample)) {
        for py in 0..shape.pooled_h {
            for px in 0..shape.pooled_w {
                let bin = py * shape.pooled_w + px;
                for iy in 0..self.grid_h {
                    let y = self.start_h
                        + py as f64 * self.bin_h
                        + (iy as f64 + 0.5) * self.bin_h / self.grid_h as f64;
                    for ix in 0..self.grid_w {
                        let x = self.start_w
                            + px as f64 * self.bin_w
                            + (ix as f64 + 0.5) * self.bin_w / self.grid_w as f64;
                        if let Some(s) = Sample::new(y, x, shape.height, shape.width) {
                            f(bin, &s);
                        }
                    }
                }
            }
        }
    }
}

/// A bilinear sample: four plane offsets and their weights.
struct Sample {
    at: [usize; 4],
    w: [f32; 4],
}

impl Sample {
    fn new(y: f64, x: f64, height: usize, width: usize) -> Option<Sample> {
        let (hf, wf) = (height as f64, width as f64);
        if !(y >= -1.0 && y <= hf && x >= -1.0 && x <= wf) {
            return None;
        }
        let y = y.max(0.0);
        let x = x.max(0.0);
        let axis = |v: f64, n: usize| {
            let low = v as usize;
            if low >= n - 1 {
                (n - 1, n - 1, 0.0)
            } else {
                (low, low + 1, v - low as f64)
            }
        };
        let (y0, y1, ly) = axis(y, height);
        let (x0, x1, lx) = axis(x, width);
        let (hy, hx) = (1.0 - ly, 1.0 - lx);
        Some(Sample {
            at: [
                y0 * width + x0,
                y0 * width + x1,
                y1 * width + x0,
                y1 * width + x1,
            ],
            w: [
                (hy * hx) as f32,
                (hy * lx) as f32,
                (ly * hx) as f32,
                (ly * lx) as f32,
            ],
        })
    }
}

pub(crate) fn forward(
    par: &Par,
    shape: &RoiAlignShape,
    features: &[f32],
    boxes: &[f32],
    output: &mut [f32],
) -> Result<Option<Fault>> {
    shape.check(features.len(), boxes.len(), output.len())?;
    let fault = first_bad_box(shape, boxes);
    let (c, plane) = (shape.channels, shape.height * shape.width);
    let bins = shape.pooled_h * shape.pooled_w;
    let per_roi = c * bins;
    let out_len = shape.num_rois * per_roi;
    if out_len == 0 {
        return Ok(fault);
    }
    par.run(
        shape.num_rois,
        1,
        Rows(&mut output[..out_len], per_roi),
        |range, Rows(out, _)| {
            for (q, r) in range.enumerate() {
                let o = &mut out[q * per_roi..(q + 1) * per_roi];
                o.fill(0.0);
                let b = &boxes[r * 5..r * 5 + 5];
                let Ok(img) = batch_index(b[0], shape.batch) else {
                    continue;
                };
                if plane == 0 {
                    continue;
                }
                let feats = &features[img * c * plane..(img + 1) * c * plane];
                let g = Geometry::new(shape, b);
                g.for_each_sample(shape, |bin, s| {
                    for ch in 0..c {
                        let f = &feats[ch * plane..(ch + 1) * plane];
                        o[ch * bins + bin] += s.w[0] * f[s.at[0]]
                            + s.w[1] * f[s.at[1]]
                            + s.w[2] * f[s.at[2]]
                            + s.w[3] * f[s.at[3]];
                    }
                });
                let inv = (1.0 / g.count) as f32;
                o.iter_mut().for_each(|v| *v *= inv);
            }
        },
        unit,
    );
    Ok(fault)
}

/// Scatters `grad_output` onto `grad_features` with the forward's bilinear weights
/// (accumulates).
pub(crate) fn backward(
    par: &Par,
    shape: &RoiAlignShape,
    grad_output: &[f32],
    boxes: &[f32],
    grad_features: &mut [f32],
) -> Result<Option<Fault>> {
    shape.check(grad_features.len(), boxes.len(), grad_output.len())?;
    let fault = first_bad_box(shape, boxes);
    let (c, plane) = (shape.channels, shape.height * shape.width);
    let bins = shape.pooled_h * shape.pooled_w;
    let per_image = c * plane;
    let feat_len = shape.batch * per_image;
    if feat_len == 0 || bins * c == 0 {
        return Ok(fault);
    }
    par.run(
        shape.batch,
        1,
        Rows(&mut grad_features[..feat_len], per_image),
        |range, Rows(gf, _)| {
            for (q, img) in range.enumerate() {
                let gi = &mut gf[q * per_image..(q + 1) * per_image];
                for r in 0..shape.num_rois {
                    let b = &boxes[r * 5..r * 5 + 5];
                    if batch_index(b[0], shape.batch) != Ok(img) {
                        continue;
                    }
                    let go = &grad_output[r * c * bins..(r + 1) * c * bins];
                    let g = Geometry::new(shape, b);
                    let inv = (1.0 / g.count) as f32;
                    g.for_each_sample(shape, |bin, s| {
                        for ch in 0..c {
                            let v = go[ch * bins + bin] * inv;
                            let f = &mut gi[ch * plane..(ch + 1) * plane];
                            for k in 0..4 {
                                f[s.at[k]] += v * s.w[k];
                            }
                        }
                    });
                }
            }
        },
        unit,
    );
    Ok(fault)
}

impl<'a> RoiAlignOps for CpuBackend<'a> {
    fn roi_align_forward(
        &self,
        shape: &RoiAlignShape,
        features: &Self::Buffer,
        boxes: &Self::Buffer,
        output: &mut Self::Buffer,
    ) -> Result<()> {
        let fault = forward(&self.par(), shape, features, boxes, output)?;
        self.record(fault);
        Ok(())
    }

    fn roi_align_backward(
        &self,
        shape: &RoiAlignShape,
        grad_output: &Self::Buffer,
        boxes: &Self::Buffer,
        grad_features: &mut Self::Buffer,
    ) -> Result<()> {
        let fault = backward(&self.par(), shape, grad_output, boxes, grad_features)?;
        self.record(fault);
        Ok(())
    }
}
