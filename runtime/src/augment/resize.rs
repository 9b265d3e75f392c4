//! Bilinear resizing with antialiasing, as torchvision resizes tensors (`antialias=True`, which
//! is PyTorch's `_upsample_bilinear2d_aa`, itself Pillow's resampling).
//!
//! Each axis is resampled separately (rows first, then columns). Output sample `i` of an axis
//! of `n_in -> n_out` samples sits at source position `c = (i + 0.5) * scale`, with
//! `scale = n_in / n_out`, and averages the source samples `j` with
//! `|j + 0.5 - c| < support` under the triangle filter `max(0, 1 - |j + 0.5 - c| / support)`,
//! the weights normalised to sum 1 over the samples inside the image:
//! - shrinking (`scale > 1`): `support = scale`, the triangle (area-like) filter stretched over
//!   the source pixels the output pixel covers;
//! - enlarging (`scale <= 1`): `support = 1`, which is exactly plain bilinear interpolation with
//!   half-pixel centres (`align_corners = False`) and the edge samples clamped.

use super::crop::CropBox;
use crate::data::Image;

/// The weights of one axis: output sample `i` is `sum_k weights[i][k] * input[starts[i] + k]`.
struct AxisWeights {
    starts: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

/// The weights of output samples `first..first + count` of an `n_in -> n_out` resampling.
fn axis_weights(n_in: usize, n_out: usize, first: usize, count: usize) -> AxisWeights {
    let scale = n_in as f64 / n_out as f64;
    let support = scale.max(1.0);
    let inv_support = 1.0 / support;
    let mut starts = Vec::with_capacity(count);
    let mut weights = Vec::with_capacity(count);
    for i in first..first + count {
        let center = (i as f64 + 0.5) * scale;
        // PyTorch truncates toward zero and clamps at 0: the same as flooring here.
        let lo = ((center - support + 0.5).floor().max(0.0) as usize).min(n_in - 1);
        let hi = ((center + support + 0.5).floor() as usize).clamp(lo + 1, n_in);
        let mut w: Vec<f64> = (lo..hi)
            .map(|j| (1.0 - ((j as f64 - center + 0.5) * inv_support).abs()).max(0.0))
            .collect();
        let total: f64 = w.iter().sum();
        if total > 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        } else {
            // Cannot happen for n_in >= 1 (the nearest sample always has weight > 0); kept so
            // that no input makes NaNs.
            w.iter_mut().for_each(|v| *v = 0.0);
            w[0] = 1.0;
        }
        starts.push(lo);
        weights.push(w.into_iter().map(|v| v as f32).collect());
    }
    AxisWeights { starts, weights }
}

/// Resizes the pixels of `region` (inside `img`) to `out_w x out_h`: torchvision's
/// `resized_crop(img, region.y, region.x, region.height, region.width, [out_h, out_w])`.
/// Sizes of 0 are treated as 1; an empty image reads as black; the region is clipped to the
/// image (and is at least one pixel).
pub fn resize_region(img: &Image, region: CropBox, out_w: usize, out_h: usize) -> Image {
    let (out_w, out_h) = (out_w.max(1), out_h.max(1));
    resize_region_window(img, region, out_w, out_h, CropBox::full(out_w, out_h))
}

/// The `window` (clipped to the output, at least one pixel) of
/// [`resize_region`]`(img, region, out_w, out_h)`, computing only those output pixels: a resize
/// followed by a crop without materialising the whole resized image.
pub fn resize_region_window(
    img: &Image,
    region: CropBox,
    out_w: usize,
    out_h: usize,
    window: CropBox,
) -> Image {
    let (out_w, out_h) = (out_w.max(1), out_h.max(1));
    let wx0 = window.x.min(out_w - 1);
    let wy0 = window.y.min(out_h - 1);
    let ww = window.width.clamp(1, out_w - wx0);
    let wh = window.height.clamp(1, out_h - wy0);
    if img.width == 0 || img.height == 0 {
        return Image::new(ww, wh);
    }
    let x0 = region.x.min(img.width - 1);
    let y0 = region.y.min(img.height - 1);
    let rw = region.width.clamp(1, img.width - x0);
    let rh = region.height.clamp(1, img.height - y0);
    let mut out = Image::new(ww, wh);
    if (rw, rh) == (out_w, out_h) {
        // Resampling at scale 1 is the identity: copy the pixels.
        for c in 0..3 {
            let src = img.channel(c);
            for y in 0..wh {
                let s = (y0 + wy0 + y) * img.width + x0 + wx0;
                let d = c * ww * wh + y * ww;
                out.pixels[d..d + ww].copy_from_slice(&src[s..s + ww]);
            }
        }
        return out;
    }
    let wx = axis_weights(rw, out_w, wx0, ww);
    let wy = axis_weights(rh, out_h, wy0, wh);
    // Only the source rows some output row reads go through the horizontal pass.
    let row_lo = wy.starts[0];
    let row_hi = wy
        .starts
        .iter()
        .zip(&wy.weights)
        .map(|(s, w)| s + w.len())
        .max()
        .unwrap_or(row_lo + 1);
    let mut rows = vec![0.0f32; (row_hi - row_lo) * ww];
    for c in 0..3 {
        let src = img.channel(c);
        // Horizontal pass: source rows row_lo..row_hi, ww outputs each.
        for (y, dst) in (row_lo..row_hi).zip(rows.chunks_exact_mut(ww)) {
            let row = &src[(y0 + y) * img.width + x0..][..rw];
            for (i, d) in dst.iter_mut().enumerate() {
                let s = wx.starts[i];
                *d = wx.weights[i]
                    .iter()
                    .zip(&row[s..])
                    .map(|(w, v)| w * v)
                    .sum();
            }
        }
        // Vertical pass: wh x ww.
        let plane = &mut out.pixels[c * ww * wh..(c + 1) * ww * wh];
        for (i, dst) in plane.chunks_exact_mut(ww).enumerate() {
            let s = wy.starts[i] - row_lo;
            for (k, &w) in wy.weights[i].iter().enumerate() {
                let src_row = &rows[(s + k) * ww..(s + k + 1) * ww];
                for (d, v) in dst.iter_mut().zip(src_row) {
                    *d += w * v;
                }
            }
        }
    }
    out
}

/// Resizes the whole image to `out_w x out_h`.
pub fn resize(img: &Image, out_w: usize, out_h: usize) -> Image {
    resize_region(img, CropBox::full(img.width, img.height), out_w, out_h)
}

/// torchvision's `Resize(size)` output size for an int `size`: the shorter side becomes
/// `size`, the longer `int(size * long / short)` (truncated), keeping the aspect ratio.
/// Returns `(width, height)`.
pub fn shorter_side_size(width: usize, height: usize, size: usize) -> (usize, usize) {
    let (w, h) = (width.max(1), height.max(1));
    let size = size.max(1);
    if w <= h {
        (size, ((size * h) as f64 / w as f64) as usize)
    } else {
        (((size * w) as f64 / h as f64) as usize, size)
    }
}

/// torchvision's `Resize(size)` with an int: see [`shorter_side_size`].
pub fn resize_shorter_side(img: &Image, size: usize) -> Image {
    let (out_w, out_h) = shorter_side_size(img.width, img.height, size);
    resize(img, out_w, out_h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constant(w: usize, h: usize, v: [f32; 3]) -> Image {
        let mut img = Image::new(w, h);
        for (ch, value) in img.pixels.chunks_exact_mut((w * h).max(1)).zip(v) {
            ch.fill(value);
        }
        img
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "at {i}: {x} vs {y}");
        }
    }

    #[test]
    fn constant_images_stay_constant() {
        let img = constant(37, 23, [0.25, 0.5, 0.75]);
        for &(w, h) in &[(1, 1), (5, 3), (37, 23), (64, 64), (100, 7), (224, 224)] {
            let out = resize(&img, w, h);
            assert_eq!((out.width, out.height), (w, h));
            for c in 0..3 {
                let want = [0.25, 0.5, 0.75][c];
                assert!(out.channel(c).iter().all(|v| (v - want).abs() < 1e-6));
            }
        }
    }

    #[test]
    fn two_times_downscale_is_the_triangle_filter() {
        // Rows: 1 x 8 ramp 0..8 shrunk to 4. Interior output i averages source 2i-1..2i+2
        // with weights (1, 3, 3, 1) / 8; the edges renormalise the weights that fall inside.
        let mut img = Image::new(8, 1);
        for c in 0..3 {
            for x in 0..8 {
                img.pixels[c * 8 + x] = x as f32;
            }
        }
        let out = resize(&img, 4, 1);
        let first = (0.0 * 3.0 + 1.0 * 3.0 + 2.0) / 7.0;
        let last = (5.0 + 6.0 * 3.0 + 7.0 * 3.0) / 7.0;
        close(out.channel(0), &[first, 2.5, 4.5, last], 1e-6);
        // A 2x2 checkerboard of period 2 shrinks to a constant 0.5 away from the edges.
        let mut board = Image::new(8, 8);
        for y in 0..8 {
            for x in 0..8 {
                board.pixels[y * 8 + x] = ((x + y) % 2) as f32;
            }
        }
        let out = resize(&board, 4, 4);
        for y in 1..3 {
            for x in 1..3 {
                assert!((out.pixels[y * 4 + x] - 0.5).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn upscaling_is_plain_bilinear() {
        let (w_in, w_out) = (5usize, 13usize);
        let mut img = Image::new(w_in, 1);
        let vals = [0.1f32, 0.9, 0.3, 0.4, 1.0];
        img.pixels[..w_in].copy_from_slice(&vals);
        let out = resize(&img, w_out, 1);
        // align_corners=False bilinear with clamped source coordinate.
        let scale = w_in as f32 / w_out as f32;
        let want: Vec<f32> = (0..w_out)
            .map(|i| {
                let src = ((i as f32 + 0.5) * scale - 0.5).max(0.0);
                let j = (src.floor() as usize).min(w_in - 1);
                let j1 = (j + 1).min(w_in - 1);
                let t = src - j as f32;
                vals[j] * (1.0 - t) + vals[j1] * t
            })
            .collect();
        close(out.channel(0), &want, 1e-6);
    }

    #[test]
    fn same_size_is_identity_and_region_is_the_crop() {
        let mut img = Image::new(6, 4);
        img.pixels = (0..72).map(|v| v as f32 / 72.0).collect();
        assert_eq!(resize(&img, 6, 4), img);
        let region = CropBox {
            x: 2,
            y: 1,
            width: 3,
            height: 2,
        };
        let out = resize_region(&img, region, 3, 2);
        for c in 0..3 {
            for y in 0..2 {
                for x in 0..3 {
                    let want = img.pixels[c * 24 + (y + 1) * 6 + x + 2];
                    assert_eq!(out.pixels[c * 6 + y * 3 + x], want);
                }
            }
        }
        // Scale 1 through the general path (a different height) keeps the rows exact.
        let out = resize_region(&img, region, 3, 4);
        assert_eq!(out.pixels[0], img.pixels[8]);
    }

    #[test]
    fn resize_preserves_the_mean_of_an_integer_shrink() {
        let mut img = Image::new(12, 12);
        img.pixels = (0..432).map(|v| ((v * 37) % 101) as f32 / 100.0).collect();
        // Triangle weights sum to 1 per output and every interior source pixel gets the same
        // total weight only approximately; check the mean loosely.
        let out = resize(&img, 4, 4);
        let m_in: f32 = img.channel(1).iter().sum::<f32>() / 144.0;
        let m_out: f32 = out.channel(1).iter().sum::<f32>() / 16.0;
        assert!((m_in - m_out).abs() < 0.05, "{m_in} {m_out}");
    }

    #[test]
    fn window_is_the_crop_of_the_full_resize() {
        let mut img = Image::new(13, 9);
        img.pixels = (0..351).map(|v| ((v * 29) % 83) as f32 / 82.0).collect();
        let region = CropBox {
            x: 1,
            y: 2,
            width: 11,
            height: 6,
        };
        for &(ow, oh) in &[(5, 4), (30, 17), (11, 6)] {
            let full = resize_region(&img, region, ow, oh);
            let win = CropBox {
                x: 1,
                y: 1,
                width: ow - 2,
                height: oh - 2,
            };
            let part = resize_region_window(&img, region, ow, oh, win);
            assert_eq!((part.width, part.height), (ow - 2, oh - 2));
            for c in 0..3 {
                for y in 0..oh - 2 {
                    for x in 0..ow - 2 {
                        let a = part.pixels[c * (ow - 2) * (oh - 2) + y * (ow - 2) + x];
                        let b = full.pixels[c * ow * oh + (y + 1) * ow + x + 1];
                        assert_eq!(a, b);
                    }
                }
            }
        }
    }

    #[test]
    fn tiny_and_empty_inputs() {
        let one = constant(1, 1, [0.2, 0.4, 0.6]);
        let out = resize(&one, 9, 4);
        assert!(out.channel(2).iter().all(|&v| (v - 0.6).abs() < 1e-6));
        let empty = Image::new(0, 5);
        assert_eq!(resize(&empty, 3, 3), Image::new(3, 3));
        assert_eq!(resize(&one, 0, 0).pixels.len(), 3);
        let big = CropBox {
            x: 10,
            y: 10,
            width: 10,
            height: 10,
        };
        assert_eq!(resize_region(&one, big, 2, 2).pixels.len(), 12);
    }

    #[test]
    fn shorter_side_keeps_the_ratio() {
        let img = Image::new(400, 300);
        let out = resize_shorter_side(&img, 256);
        assert_eq!((out.width, out.height), (341, 256));
        let out = resize_shorter_side(&Image::new(3, 7), 256);
        assert_eq!((out.width, out.height), (256, 597));
    }
}
