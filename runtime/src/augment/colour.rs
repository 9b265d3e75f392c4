//! Colour: torchvision's `ColorJitter` (on tensors) and `Grayscale`.
//!
//! All operations work on `[0, 1]` images and clamp their result to `[0, 1]` as torchvision's
//! `_blend` does (hue needs no clamp: it only permutes and mixes the channel values).

use super::random::{permutation4, uniform};
use crate::data::Image;
use rand::Rng;

/// Luma weights `L = 0.299 R + 0.587 G + 0.114 B` (ITU-R 601-2, Pillow's `convert("L")`).
/// torchvision's tensor path rounds the red weight to 0.2989; the difference is below 1e-4.
pub const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// `ColorJitter(brightness, contrast, saturation, hue)` strengths. A strength `v` draws its
/// factor uniformly in `[max(0, 1 - v), 1 + v]` (hue: a shift uniform in `[-v, v]`, `v` at most
/// 0.5); a strength of 0 switches that adjustment off and draws nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Jitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

impl Jitter {
    /// No jitter at all.
    pub const NONE: Jitter = Jitter::new(0.0, 0.0, 0.0, 0.0);

    pub const fn new(brightness: f32, contrast: f32, saturation: f32, hue: f32) -> Self {
        Jitter {
            brightness,
            contrast,
            saturation,
            hue,
        }
    }

    /// Draws the factors and their order as torchvision's `ColorJitter.get_params` does: first
    /// a random permutation of (brightness, contrast, saturation, hue), then each enabled factor
    /// in that fixed order.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> JitterParams {
        let factor = |rng: &mut R, v: f32| {
            (v > 0.0).then(|| uniform(rng, (1.0 - v as f64).max(0.0), 1.0 + v as f64) as f32)
        };
        let order = permutation4(rng);
        let brightness = factor(rng, self.brightness);
        let contrast = factor(rng, self.contrast);
        let saturation = factor(rng, self.saturation);
        let hue = (self.hue > 0.0).then(|| {
            let h = self.hue.min(0.5) as f64;
            uniform(rng, -h, h) as f32
        });
        JitterParams {
            order,
            brightness,
            contrast,
            saturation,
            hue,
        }
    }
}

/// One draw of [`Jitter`]: the factors (`None`: not applied) and the order, a permutation of
/// `0..4` naming brightness (0), contrast (1), saturation (2) and hue (3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JitterParams {
    pub order: [usize; 4],
    pub brightness: Option<f32>,
    pub contrast: Option<f32>,
    pub saturation: Option<f32>,
    pub hue: Option<f32>,
}

impl JitterParams {
    /// Applies the adjustments in `order`.
    pub fn apply(&self, img: &mut Image) {
        for &op in &self.order {
            match op {
                0 => self.brightness.map(|f| adjust_brightness(img, f)),
                1 => self.contrast.map(|f| adjust_contrast(img, f)),
                2 => self.saturation.map(|f| adjust_saturation(img, f)),
                _ => self.hue.map(|f| adjust_hue(img, f)),
            };
        }
    }
}

/// The luma plane of an image.
pub fn luma(img: &Image) -> Vec<f32> {
    let (r, g, b) = (img.channel(0), img.channel(1), img.channel(2));
    r.iter()
        .zip(g)
        .zip(b)
        .map(|((r, g), b)| LUMA[0] * r + LUMA[1] * g + LUMA[2] * b)
        .collect()
}

/// `Grayscale(num_output_channels = 3)`: the luma copied to all three channels.
pub fn grayscale(img: &mut Image) {
    let l = luma(img);
    let plane = img.plane();
    for c in 0..3 {
        img.pixels[c * plane..(c + 1) * plane].copy_from_slice(&l);
    }
}

/// `clamp(f * x + (1 - f) * other)` per pixel and channel, `other` a plane shared by the
/// channels.
fn blend_plane(img: &mut Image, other: &[f32], f: f32) {
    let plane = img.plane();
    for ch in img.pixels.chunks_exact_mut(plane.max(1)) {
        for (x, o) in ch.iter_mut().zip(other) {
            *x = (f * *x + (1.0 - f) * o).clamp(0.0, 1.0);
        }
    }
}

/// Blends with black: `clamp(f x)`.
pub fn adjust_brightness(img: &mut Image, f: f32) {
    img.pixels
        .iter_mut()
        .for_each(|x| *x = (f * *x).clamp(0.0, 1.0));
}

/// Blends with the mean luma of the whole image: `clamp(f x + (1 - f) mean(L))`.
pub fn adjust_contrast(img: &mut Image, f: f32) {
    let l = luma(img);
    let mean = if l.is_empty() {
        0.0
    } else {
        (l.iter().map(|&v| v as f64).sum::<f64>() / l.len() as f64) as f32
    };
    let m = (1.0 - f) * mean;
    img.pixels
        .iter_mut()
        .for_each(|x| *x = (f * *x + m).clamp(0.0, 1.0));
}

/// Blends with the luma image: `clamp(f x + (1 - f) L)`.
pub fn adjust_saturation(img: &mut Image, f: f32) {
    let l = luma(img);
    blend_plane(img, &l, f);
}

/// Shifts the hue by `shift` turns (in `[-0.5, 0.5]`): RGB -> HSV, `h = (h + shift) mod 1`,
/// HSV -> RGB, with torchvision's `_rgb2hsv` / `_hsv2rgb` formulas.
///
/// Per pixel it floors and wraps: on the baseline x86-64 target those are libm calls, so where
/// the CPU has SSE4.1 the same code runs compiled for it (one instruction each; 13 % of the
/// stage-1 loader's time went to the calls).
pub fn adjust_hue(img: &mut Image, shift: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.1") {
        // SAFETY: `shift_hue_sse41` needs SSE4.1, which this CPU was just found to have.
        return unsafe { shift_hue_sse41(img, shift) };
    }
    shift_hue(img, shift)
}

/// [`shift_hue`] compiled with SSE4.1's rounding instructions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
unsafe fn shift_hue_sse41(img: &mut Image, shift: f32) {
    shift_hue(img, shift)
}

#[inline(always)]
fn shift_hue(img: &mut Image, shift: f32) {
    let plane = img.plane();
    let (r, rest) = img.pixels.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let (h, s, v) = rgb_to_hsv(*r, *g, *b);
        let h = wrap_unit(h + shift);
        (*r, *g, *b) = hsv_to_rgb(h, s, v);
    }
}

/// `x.rem_euclid(1.0)` through `trunc` (an instruction with SSE4.1) where `%` is always a libm
/// call: `x - trunc(x)` is `fmod(x, 1)` exactly, but for the sign of a zero result (+0 for a
/// whole negative `x`, where `fmod` gives -0; the hue of either is the same colour).
#[inline(always)]
fn wrap_unit(x: f32) -> f32 {
    let r = x - x.trunc();
    if r < 0.0 {
        r + 1.0
    } else {
        r
    }
}

/// torchvision's `_rgb2hsv` for one pixel: hue in `[0, 1)`, saturation, value.
#[inline(always)]
pub fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let cr_div = if eqc { 1.0 } else { cr };
    let rc = (maxc - r) / cr_div;
    let gc = (maxc - g) / cr_div;
    let bc = (maxc - b) / cr_div;
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    // torch.fmod(h / 6 + 1, 1): h / 6 + 1 is positive, so the fraction is x - trunc(x).
    let x = h / 6.0 + 1.0;
    let h = x - x.trunc();
    (h, s, maxc)
}

/// torchvision's `_hsv2rgb` for one pixel.
#[inline(always)]
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match (i as i64).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    /// The wrap equals `rem_euclid(1.0)` (as values: a zero may differ in sign), and the hue
    /// shift gives the same bits compiled for SSE4.1 as for the baseline target.
    #[test]
    fn the_hue_shift_is_the_same_on_every_path() {
        for i in -300_000..=500_000 {
            let x = i as f32 / 200_000.0;
            for x in [x, f32::from_bits(x.to_bits() + 1), -1e-9, 1e-30] {
                assert_eq!(wrap_unit(x), x.rem_euclid(1.0), "{x}");
            }
        }
        let mut img = Image::new(64, 64);
        let mut state = 0x2545_f491_u32;
        for v in img.pixels.iter_mut() {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            // Every eighth value a whole 1/255 step, as decoded images are, the rest anywhere.
            *v = match state % 8 {
                0 => (state % 256) as f32 / 255.0,
                _ => (state % 100_001) as f32 / 100_000.0,
            };
        }
        for shift in [-0.5f32, -0.31, -1e-7, 0.0, 0.02, 0.25, 0.5] {
            let mut baseline = img.clone();
            shift_hue(&mut baseline, shift);
            let mut dispatched = img.clone();
            adjust_hue(&mut dispatched, shift);
            let bits = |i: &Image| i.pixels.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&baseline), bits(&dispatched), "shift {shift}");
        }
    }

    fn test_image() -> Image {
        let (w, h) = (7, 5);
        let mut img = Image::new(w, h);
        for (i, v) in img.pixels.iter_mut().enumerate() {
            *v = ((i * 53 + 11) % 97) as f32 / 96.0;
        }
        img
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "at {i}: {x} vs {y}");
        }
    }

    #[test]
    fn unit_factors_are_the_identity() {
        let img = test_image();
        let mut out = img.clone();
        let p = JitterParams {
            order: [3, 1, 0, 2],
            brightness: Some(1.0),
            contrast: Some(1.0),
            saturation: Some(1.0),
            hue: Some(0.0),
        };
        p.apply(&mut out);
        close(&out.pixels, &img.pixels, 1e-6);
        // Strength 0 draws nothing and applies nothing.
        let mut rng = SmallRng::seed_from_u64(1);
        let p = Jitter::NONE.sample(&mut rng);
        assert_eq!(
            (p.brightness, p.contrast, p.saturation, p.hue),
            (None, None, None, None)
        );
    }

    #[test]
    fn grayscale_weights() {
        let mut img = Image::new(3, 1);
        // Pure red, green and blue pixels.
        img.pixels = vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        grayscale(&mut img);
        for c in 0..3 {
            close(img.channel(c), &LUMA, 1e-7);
        }
    }

    #[test]
    fn adjustments_match_their_formulas() {
        let img = test_image();
        let l = luma(&img);
        let mean = l.iter().sum::<f32>() / l.len() as f32;
        let mut b = img.clone();
        adjust_brightness(&mut b, 1.3);
        let mut c = img.clone();
        adjust_contrast(&mut c, 0.6);
        let mut s = img.clone();
        adjust_saturation(&mut s, 1.4);
        let plane = img.plane();
        for (i, &x) in img.pixels.iter().enumerate() {
            assert!((b.pixels[i] - (1.3 * x).min(1.0)).abs() < 1e-6);
            assert!((c.pixels[i] - (0.6 * x + 0.4 * mean).clamp(0.0, 1.0)).abs() < 1e-5);
            let g = l[i % plane];
            assert!((s.pixels[i] - (1.4 * x - 0.4 * g).clamp(0.0, 1.0)).abs() < 1e-6);
        }
        // Saturation 0 is grayscale.
        let mut s0 = img.clone();
        adjust_saturation(&mut s0, 0.0);
        let mut g = img.clone();
        grayscale(&mut g);
        close(&s0.pixels, &g.pixels, 1e-6);
    }

    #[test]
    fn hue_round_trip_and_known_shifts() {
        for &(r, g, b) in &[
            (0.2f32, 0.5f32, 0.9f32),
            (1.0, 0.0, 0.0),
            (0.3, 0.3, 0.3),
            (0.9, 0.9, 0.1),
            (0.0, 0.4, 0.2),
        ] {
            let (h, s, v) = rgb_to_hsv(r, g, b);
            assert!((0.0..1.0).contains(&h));
            let (r2, g2, b2) = hsv_to_rgb(h, s, v);
            close(&[r2, g2, b2], &[r, g, b], 1e-6);
        }
        // Red shifted by a third of a turn is green; by -1/3 it is blue.
        let mut img = Image::new(1, 1);
        img.pixels = vec![1.0, 0.0, 0.0];
        adjust_hue(&mut img, 1.0 / 3.0);
        close(&img.pixels, &[0.0, 1.0, 0.0], 1e-5);
        adjust_hue(&mut img, -2.0 / 3.0);
        close(&img.pixels, &[0.0, 0.0, 1.0], 1e-5);
        // Grays have no hue.
        let mut gray = Image::new(1, 1);
        gray.pixels = vec![0.4; 3];
        adjust_hue(&mut gray, 0.3);
        close(&gray.pixels, &[0.4; 3], 1e-6);
    }

    #[test]
    fn factors_are_drawn_in_range_in_random_order() {
        let mut rng = SmallRng::seed_from_u64(9);
        let j = Jitter::new(0.4, 0.4, 0.4, 0.1);
        let mut firsts = [0usize; 4];
        for _ in 0..2000 {
            let p = j.sample(&mut rng);
            for f in [p.brightness, p.contrast, p.saturation] {
                assert!((0.6..1.4).contains(&f.unwrap()));
            }
            assert!((-0.1..0.1).contains(&p.hue.unwrap()));
            firsts[p.order[0]] += 1;
        }
        assert!(firsts.iter().all(|&n| n > 400), "{firsts:?}");
        // Strength above 1 clamps the lower bound at 0.
        let p = Jitter::new(3.0, 0.0, 0.0, 0.0).sample(&mut rng);
        assert!((0.0..4.0).contains(&p.brightness.unwrap()));
    }

    #[test]
    fn results_stay_in_unit_range() {
        let mut rng = SmallRng::seed_from_u64(2);
        let j = Jitter::new(0.9, 0.9, 0.9, 0.5);
        for _ in 0..50 {
            let mut img = test_image();
            j.sample(&mut rng).apply(&mut img);
            assert!(img.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }
}
