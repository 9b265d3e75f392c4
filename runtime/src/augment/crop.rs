//! Geometry: torchvision's `RandomResizedCrop` box sampling, the centre crop and the
//! horizontal flip.
//!
//! Boxes are integer pixel rectangles of the image they are cut from, as torchvision's
//! `get_params` returns them; the crop is then resized by [`super::resize::resize_region`].

use super::random::{below, uniform};
use crate::data::Image;
use rand::Rng;

/// A rectangle of whole pixels: columns `x..x + width`, rows `y..y + height`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

impl CropBox {
    /// The whole of a `width x height` image.
    pub fn full(width: usize, height: usize) -> Self {
        CropBox {
            x: 0,
            y: 0,
            width,
            height,
        }
    }

    /// `[x1, y1, x2, y2]` in pixel-edge coordinates: the box covers `x1 <= x < x2`,
    /// `y1 <= y < y2` where pixel `(i, j)` occupies `[i, i + 1) x [j, j + 1)` (the box
    /// `RandomResizedCrop` cut, `[j, i, j + w, i + h]`). These are the values PBSD's ROI-align
    /// (`aligned = false`, as in the official code) is given; that ROI-align places pixel
    /// centres at integers, so it samples half a pixel up-left of this exact geometry, as the
    /// official code does.
    pub fn xyxy(&self) -> [f32; 4] {
        [
            self.x as f32,
            self.y as f32,
            (self.x + self.width) as f32,
            (self.y + self.height) as f32,
        ]
    }

    /// The same pixels after the containing image (of width `image_width`) is flipped
    /// horizontally: `x -> image_width - x`, so `x1' = image_width - x2`.
    pub fn flipped(&self, image_width: usize) -> Self {
        CropBox {
            x: image_width.saturating_sub(self.x + self.width),
            ..*self
        }
    }
}

/// Python's `int(round(v))` (ties to even) for a non-negative size, saturating; NaN gives 0.
fn round_size(v: f64) -> usize {
    let r = v.round_ties_even();
    if r.is_nan() || r <= 0.0 {
        0
    } else {
        r as usize
    }
}

/// torchvision's `RandomResizedCrop.get_params` for a `width x height` image: up to 10 tries
/// of an area fraction uniform in `scale` and an aspect ratio (w / h) log-uniform in `ratio`,
/// the first box that fits wins, at a uniformly random position; otherwise the centre crop of
/// the whole image clamped to the ratio range. Always returns a non-empty box inside the image
/// (for a non-empty image).
pub fn random_resized_crop_box<R: Rng + ?Sized>(
    width: usize,
    height: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut R,
) -> CropBox {
    let area = (width * height) as f64;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, log_lo, log_hi).exp();
        let w = round_size((target_area * aspect).sqrt());
        let h = round_size((target_area / aspect).sqrt());
        if 0 < w && w <= width && 0 < h && h <= height {
            let y = below(rng, height - h + 1);
            let x = below(rng, width - w + 1);
            return CropBox {
                x,
                y,
                width: w,
                height: h,
            };
        }
    }
    fallback_box(width, height, ratio)
}

/// The fallback of [`random_resized_crop_box`]: the largest centred box whose aspect ratio is
/// the input's clamped to `ratio`.
pub fn fallback_box(width: usize, height: usize, ratio: (f64, f64)) -> CropBox {
    let in_ratio = width as f64 / height as f64;
    let (min_r, max_r) = (ratio.0.min(ratio.1), ratio.0.max(ratio.1));
    let (w, h) = if in_ratio < min_r {
        (width, round_size(width as f64 / min_r))
    } else if in_ratio > max_r {
        (round_size(height as f64 * max_r), height)
    } else {
        (width, height)
    };
    // Degenerate ratios (0, infinite, NaN) could round to 0 or overflow: keep the box inside.
    let (w, h) = (w.clamp(1, width.max(1)), h.clamp(1, height.max(1)));
    CropBox {
        x: width.saturating_sub(w) / 2,
        y: height.saturating_sub(h) / 2,
        width: w,
        height: h,
    }
}

/// torchvision's `CenterCrop` box of size `out_w x out_h` (at most the image): the offset is
/// `int(round((size - out) / 2))`.
pub fn center_crop_box(width: usize, height: usize, out_w: usize, out_h: usize) -> CropBox {
    let (w, h) = (out_w.min(width), out_h.min(height));
    CropBox {
        x: round_size((width - w) as f64 / 2.0),
        y: round_size((height - h) as f64 / 2.0),
        width: w,
        height: h,
    }
}

/// Mirrors the image left-right in place.
pub fn hflip(img: &mut Image) {
    let w = img.width;
    if w < 2 {
        return;
    }
    for row in img.pixels.chunks_exact_mut(w) {
        row.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

    #[test]
    fn sampled_area_and_ratio_stay_in_range() {
        let mut rng = SmallRng::seed_from_u64(7);
        let (w, h) = (224, 224);
        let (mut min_frac, mut max_frac) = (f64::MAX, 0.0f64);
        let (mut min_r, mut max_r) = (f64::MAX, 0.0f64);
        for _ in 0..20_000 {
            let b = random_resized_crop_box(w, h, (0.08, 1.0), RATIO, &mut rng);
            assert!(b.width >= 1 && b.height >= 1);
            assert!(b.x + b.width <= w && b.y + b.height <= h, "{b:?}");
            let frac = (b.width * b.height) as f64 / (w * h) as f64;
            let r = b.width as f64 / b.height as f64;
            min_frac = min_frac.min(frac);
            max_frac = max_frac.max(frac);
            min_r = min_r.min(r);
            max_r = max_r.max(r);
            // Rounding each side to whole pixels moves area and ratio a little.
            assert!((0.08 * 0.97..=1.0).contains(&frac), "{frac}");
            assert!((0.75 * 0.98..=4.0 / 3.0 * 1.02).contains(&r), "{r}");
        }
        // Over many draws the ranges are covered.
        assert!(min_frac < 0.09 && max_frac > 0.95, "{min_frac} {max_frac}");
        assert!(min_r < 0.77 && max_r > 1.30, "{min_r} {max_r}");
    }

    #[test]
    fn positions_cover_the_image() {
        let mut rng = SmallRng::seed_from_u64(3);
        let (mut left, mut right) = (false, false);
        for _ in 0..5000 {
            let b = random_resized_crop_box(64, 48, (0.05, 0.6), RATIO, &mut rng);
            left |= b.x == 0;
            right |= b.x + b.width == 64;
            assert!(b.y + b.height <= 48);
        }
        assert!(left && right);
    }

    #[test]
    fn fallback_is_the_clamped_centre_crop() {
        // No sampled box fits a scale above 1: the fallback is used.
        let mut rng = SmallRng::seed_from_u64(0);
        let b = random_resized_crop_box(100, 10, (2.0, 3.0), RATIO, &mut rng);
        // in_ratio 10 > 4/3: h = 10, w = round(13.33) = 13, centred.
        assert_eq!(
            b,
            CropBox {
                x: 43,
                y: 0,
                width: 13,
                height: 10
            }
        );
        assert_eq!(
            fallback_box(10, 100, RATIO),
            CropBox {
                x: 0,
                y: 43,
                width: 10,
                height: 13
            }
        );
        assert_eq!(fallback_box(30, 32, RATIO), CropBox::full(30, 32));
    }

    #[test]
    fn tiny_and_degenerate_inputs_give_a_valid_box() {
        let mut rng = SmallRng::seed_from_u64(5);
        for &(w, h) in &[(1, 1), (1, 7), (9, 1), (2, 3)] {
            for scale in [(0.08, 1.0), (0.0, 0.0), (1.0, 0.5)] {
                for ratio in [RATIO, (0.0, 0.0), (f64::NAN, 2.0), (5.0, 9.0)] {
                    let b = random_resized_crop_box(w, h, scale, ratio, &mut rng);
                    assert!(b.width >= 1 && b.height >= 1, "{b:?}");
                    assert!(b.x + b.width <= w && b.y + b.height <= h, "{b:?}");
                }
            }
        }
    }

    #[test]
    fn center_crop_offsets_round_like_python() {
        // (256 - 224) / 2 = 16; (5 - 2) / 2 = 1.5 -> 2 (ties to even).
        assert_eq!(center_crop_box(256, 341, 224, 224).x, 16);
        assert_eq!(center_crop_box(256, 341, 224, 224).y, 58);
        assert_eq!(center_crop_box(5, 5, 2, 2).x, 2);
        assert_eq!(center_crop_box(3, 3, 10, 10), CropBox::full(3, 3));
    }

    #[test]
    fn flip_and_flipped_box() {
        let mut img = Image::new(3, 2);
        img.pixels = (0..18).map(|v| v as f32).collect();
        hflip(&mut img);
        assert_eq!(&img.pixels[..6], &[2.0, 1.0, 0.0, 5.0, 4.0, 3.0]);
        let b = CropBox {
            x: 1,
            y: 2,
            width: 3,
            height: 4,
        };
        assert_eq!(b.xyxy(), [1.0, 2.0, 4.0, 6.0]);
        assert_eq!(b.flipped(10).xyxy(), [6.0, 2.0, 9.0, 6.0]);
        assert_eq!(b.flipped(10).flipped(10), b);
    }
}
