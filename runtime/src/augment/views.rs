//! The views the training and evaluation loops feed the model: stage 1's query, key and PBSD
//! crops, stage 2's view and the evaluation view. Each is a normalised CHW tensor.

use super::blur::gaussian_blur;
use super::colour::grayscale;
use super::config::{AugmentConfig, ViewOps};
use super::crop::{center_crop_box, hflip, random_resized_crop_box, CropBox};
use super::normalise::normalise;
use super::random::{chance, uniform};
use super::resize::{resize, resize_region, resize_region_window, shorter_side_size};
use crate::data::Image;
use rand::Rng;
use std::borrow::Cow;

/// One image's stage-1 input.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage1Views {
    /// The query (student) view: `3 x S x S`, normalised.
    pub query: Vec<f32>,
    /// The key (momentum-encoder) view: `3 x S x S`, normalised.
    pub key: Vec<f32>,
    /// `C` PBSD crops, each `3 x s x s`, normalised.
    pub crops: Vec<Vec<f32>>,
    /// Per crop, the rectangle it was cut from as `[x1, y1, x2, y2]` in pixel-edge coordinates
    /// of the *query view as returned* (`S x S`, after the query's flip): the crop shows the
    /// query view's pixels `x1 <= x < x2`, `y1 <= y < y2` (whole numbers, `0 <= x1 < x2 <= S`),
    /// resized to `s x s` and possibly mirrored by the crop's own flip, before colour. ROI-align
    /// of the query's feature map over this box (scaled by 1 / the feature stride) pools the
    /// same content (see [`CropBox::xyxy`] for the half-pixel convention).
    pub boxes: Vec<[f32; 4]>,
    /// Whether the query view was flipped (the boxes already account for it).
    pub query_flipped: bool,
}

/// An empty image reads as one black pixel, so that every view has something to crop.
fn non_empty(img: &Image) -> Cow<'_, Image> {
    if img.width == 0 || img.height == 0 {
        Cow::Owned(Image::new(1, 1))
    } else {
        Cow::Borrowed(img)
    }
}

/// Runs a view's random operations on `img` in place: flip, jitter, grayscale, blur. Returns
/// whether it flipped.
fn apply_ops<R: Rng + ?Sized>(img: &mut Image, ops: &ViewOps, rng: &mut R) -> bool {
    let flipped = chance(rng, ops.flip_p);
    if flipped {
        hflip(img);
    }
    if chance(rng, ops.jitter_p) {
        ops.jitter.sample(rng).apply(img);
    }
    if chance(rng, ops.grayscale_p) {
        grayscale(img);
    }
    if chance(rng, ops.blur_p) {
        let sigma = uniform(rng, ops.blur_sigma.0 as f64, ops.blur_sigma.1 as f64) as f32;
        gaussian_blur(img, sigma);
    }
    flipped
}

/// A `RandomResizedCrop(size, scale, cfg.ratio)` of `img` (geometry only).
fn random_resized_crop<R: Rng + ?Sized>(
    img: &Image,
    size: usize,
    scale: (f64, f64),
    cfg: &AugmentConfig,
    rng: &mut R,
) -> (Image, CropBox) {
    let b = random_resized_crop_box(img.width, img.height, scale, cfg.ratio, rng);
    (resize_region(img, b, size, size), b)
}

/// Stage 1 (DSCL + PBSD) views of one image.
///
/// - query: `RandomResizedCrop(S, image_scale)` of `img`, then `cfg.query`'s operations;
/// - key: an independent `RandomResizedCrop(S, image_scale)`, then `cfg.key`'s operations (by
///   default the colour jitter always runs: [`ViewOps::KEY`]);
/// - crops: `cfg.crops` times a `RandomResizedCrop(s, crop_scale)` of the query's `S x S`
///   resized crop *before* its flip and colour operations, then `cfg.crop`'s operations; see
///   [`Stage1Views::boxes`] for where each lies in the query view.
///
/// The random draws are, in order: query box, query operations, key box, key operations, then
/// per crop its box and its operations; the result is a function of the RNG state.
pub fn stage1_views<R: Rng + ?Sized>(img: &Image, cfg: &AugmentConfig, rng: &mut R) -> Stage1Views {
    let img = non_empty(img);
    let (big, small) = (cfg.image_size.max(1), cfg.crop_size.max(1));

    let (query_crop, _) = random_resized_crop(&img, big, cfg.image_scale, cfg, rng);
    let mut query = query_crop.clone();
    let query_flipped = apply_ops(&mut query, &cfg.query, rng);

    let (mut key, _) = random_resized_crop(&img, big, cfg.image_scale, cfg, rng);
    apply_ops(&mut key, &cfg.key, rng);

    let mut crops = Vec::with_capacity(cfg.crops);
    let mut boxes = Vec::with_capacity(cfg.crops);
    for _ in 0..cfg.crops {
        let (mut crop, b) = random_resized_crop(&query_crop, small, cfg.crop_scale, cfg, rng);
        apply_ops(&mut crop, &cfg.crop, rng);
        let b = if query_flipped { b.flipped(big) } else { b };
        boxes.push(b.xyxy());
        crops.push(normalise(crop, cfg.mean, cfg.std));
    }
    Stage1Views {
        query: normalise(query, cfg.mean, cfg.std),
        key: normalise(key, cfg.mean, cfg.std),
        crops,
        boxes,
        query_flipped,
    }
}

/// Stage 2 (classifier) view: `RandomResizedCrop(S, image_scale)`, then `cfg.stage2`'s
/// operations (by default the official `equal_lincls.py` transform,
/// [`ViewOps::LINEAR_CLASSIFIER`]: jitter p 0.8, grayscale p 0.2, blur p 0.5, flip),
/// normalised: `3 x S x S`.
pub fn stage2_view<R: Rng + ?Sized>(img: &Image, cfg: &AugmentConfig, rng: &mut R) -> Vec<f32> {
    let img = non_empty(img);
    let (mut view, _) = random_resized_crop(&img, cfg.image_size.max(1), cfg.image_scale, cfg, rng);
    apply_ops(&mut view, &cfg.stage2, rng);
    normalise(view, cfg.mean, cfg.std)
}

/// Evaluation view, deterministic: for `S >= cfg.eval_center_crop_min_size`, the shorter side
/// resized to `round(S / eval_crop_fraction)` (the longer side in proportion, truncated) and
/// the centre `S x S` cut; for smaller `S` a plain resize to `S x S`. Normalised: `3 x S x S`.
///
/// The resize target is kept within `[S, 16 S]` whatever `eval_crop_fraction` says, and only
/// the centre window is computed, so extreme aspect ratios cost no more than a square image.
pub fn eval_view(img: &Image, cfg: &AugmentConfig) -> Vec<f32> {
    let img = non_empty(img);
    let s = cfg.image_size.max(1);
    let view = if s >= cfg.eval_center_crop_min_size {
        let short = (s as f64 / cfg.eval_crop_fraction).round_ties_even();
        let short = if short.is_finite() { short as usize } else { s };
        let short = short.clamp(s, 16 * s);
        let (w, h) = (img.width, img.height);
        let (out_w, out_h) = shorter_side_size(w, h, short);
        let window = center_crop_box(out_w, out_h, s, s);
        resize_region_window(&img, CropBox::full(w, h), out_w, out_h, window)
    } else {
        resize(&img, s, s)
    };
    normalise(view, cfg.mean, cfg.std)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    /// R encodes the column, G the row, B a checker: every pixel tells where it came from.
    fn coordinate_image(w: usize, h: usize) -> Image {
        let mut img = Image::new(w, h);
        let plane = w * h;
        for y in 0..h {
            for x in 0..w {
                img.pixels[y * w + x] = (x as f32 + 0.5) / w as f32;
                img.pixels[plane + y * w + x] = (y as f32 + 0.5) / h as f32;
                img.pixels[2 * plane + y * w + x] = ((x / 3 + y / 3) % 2) as f32;
            }
        }
        img
    }

    /// Colour off, identity normalisation: the outputs are the geometric pixels.
    fn geometric(size: usize, flip_p: f64) -> AugmentConfig {
        let mut cfg = AugmentConfig::for_image_size(size).without_colour();
        cfg.mean = [0.0; 3];
        cfg.std = [1.0; 3];
        for ops in [&mut cfg.query, &mut cfg.key, &mut cfg.crop, &mut cfg.stage2] {
            ops.flip_p = flip_p;
        }
        cfg
    }

    fn as_image(v: &[f32], side: usize) -> Image {
        Image {
            width: side,
            height: side,
            pixels: v.to_vec(),
        }
    }

    /// The query view's pixels under `b`, resized to the crop size: what the crop must show.
    fn query_roi(views: &Stage1Views, b: [f32; 4], cfg: &AugmentConfig) -> Image {
        let q = as_image(&views.query, cfg.image_size);
        let region = CropBox {
            x: b[0] as usize,
            y: b[1] as usize,
            width: (b[2] - b[0]) as usize,
            height: (b[3] - b[1]) as usize,
        };
        resize_region(&q, region, cfg.crop_size, cfg.crop_size)
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn check_boxes(views: &Stage1Views, cfg: &AugmentConfig) {
        let s = cfg.image_size as f32;
        assert_eq!(views.boxes.len(), cfg.crops);
        for b in &views.boxes {
            assert!(0.0 <= b[0] && b[0] < b[2] && b[2] <= s, "{b:?}");
            assert!(0.0 <= b[1] && b[1] < b[3] && b[3] <= s, "{b:?}");
            assert!(b.iter().all(|v| v.fract() == 0.0));
        }
    }

    #[test]
    fn crops_show_the_query_pixels_under_their_boxes() {
        // Flip never (query and crops as cut) and always (both mirrored): either way the crop
        // is exactly the query view's box resized.
        for flip_p in [0.0, 1.0] {
            let cfg = geometric(32, flip_p);
            let img = coordinate_image(57, 41);
            for seed in 0..20 {
                let mut rng = SmallRng::seed_from_u64(seed);
                let v = stage1_views(&img, &cfg, &mut rng);
                assert_eq!(v.query_flipped, flip_p == 1.0);
                check_boxes(&v, &cfg);
                for (crop, b) in v.crops.iter().zip(&v.boxes) {
                    let want = query_roi(&v, *b, &cfg);
                    assert!(max_diff(crop, &want.pixels) < 1e-5, "seed {seed} {b:?}");
                }
            }
        }
    }

    #[test]
    fn flipped_query_boxes_are_mirrored() {
        // The crop flip off, the query flip always: the reported box is the mirror image of the
        // box in the unflipped query, and the crop is the (mirrored) content there.
        let mut cfg = geometric(32, 0.0);
        cfg.query.flip_p = 1.0;
        let img = coordinate_image(40, 40);
        let mut unflipped_cfg = cfg;
        unflipped_cfg.query.flip_p = 0.0;
        for seed in 0..20 {
            let v = stage1_views(&img, &cfg, &mut SmallRng::seed_from_u64(seed));
            let u = stage1_views(&img, &unflipped_cfg, &mut SmallRng::seed_from_u64(seed));
            assert!(v.query_flipped && !u.query_flipped);
            assert_eq!(v.crops, u.crops);
            for (i, (bv, bu)) in v.boxes.iter().zip(&u.boxes).enumerate() {
                assert_eq!(*bv, [32.0 - bu[2], bu[1], 32.0 - bu[0], bu[3]]);
                // The flipped query's ROI is the crop mirrored.
                let mut roi = query_roi(&v, *bv, &cfg);
                hflip(&mut roi);
                assert!(max_diff(&v.crops[i], &roi.pixels) < 1e-5);
                // The R channel encodes the source column: mirrored content runs backwards.
                let s = cfg.crop_size;
                let q = query_roi(&v, *bv, &cfg);
                assert!(q.pixels[0] >= q.pixels[s - 1]);
            }
        }
    }

    #[test]
    fn random_flips_keep_boxes_consistent() {
        // Default flips (p 0.5 each): the crop is the query's box content, mirrored when
        // exactly one of the query and the crop flipped.
        let cfg = geometric(16, 0.5);
        let img = coordinate_image(23, 30);
        let mut seen = [false; 2];
        for seed in 0..40 {
            let v = stage1_views(&img, &cfg, &mut SmallRng::seed_from_u64(seed));
            seen[v.query_flipped as usize] = true;
            check_boxes(&v, &cfg);
            for (crop, b) in v.crops.iter().zip(&v.boxes) {
                let roi = query_roi(&v, *b, &cfg);
                let mut mirrored = roi.clone();
                hflip(&mut mirrored);
                let d = max_diff(crop, &roi.pixels).min(max_diff(crop, &mirrored.pixels));
                assert!(d < 1e-5, "seed {seed}");
            }
        }
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn output_lengths() {
        let img = coordinate_image(50, 37);
        for size in [8, 16, 32, 96, 224] {
            let cfg = AugmentConfig::for_image_size(size);
            let mut rng = SmallRng::seed_from_u64(size as u64);
            let v = stage1_views(&img, &cfg, &mut rng);
            assert_eq!(v.query.len(), 3 * size * size);
            assert_eq!(v.key.len(), 3 * size * size);
            assert_eq!(v.crops.len(), cfg.crops);
            for c in &v.crops {
                assert_eq!(c.len(), 3 * cfg.crop_size * cfg.crop_size);
            }
            check_boxes(&v, &cfg);
            assert_eq!(stage2_view(&img, &cfg, &mut rng).len(), 3 * size * size);
            assert_eq!(eval_view(&img, &cfg).len(), 3 * size * size);
            let all = v.query.iter().chain(&v.key).chain(v.crops.iter().flatten());
            assert!(all.clone().all(|x| x.is_finite()));
        }
    }

    #[test]
    fn normalisation_is_applied() {
        let mut img = Image::new(20, 10);
        img.pixels.fill(0.5);
        let cfg = AugmentConfig::for_image_size(16).without_colour();
        let v = stage2_view(&img, &cfg, &mut SmallRng::seed_from_u64(0));
        for c in 0..3 {
            let want = (0.5 - cfg.mean[c]) / cfg.std[c];
            assert!(v[c * 256..(c + 1) * 256]
                .iter()
                .all(|x| (x - want).abs() < 1e-5));
        }
        let e = eval_view(&img, &cfg);
        assert!((e[0] - (0.5 - cfg.mean[0]) / cfg.std[0]).abs() < 1e-5);
        let s = stage1_views(&img, &cfg, &mut SmallRng::seed_from_u64(0));
        assert!((s.crops[0][0] - (0.5 - cfg.mean[0]) / cfg.std[0]).abs() < 1e-5);
    }

    #[test]
    fn eval_view_is_resize_then_centre_crop() {
        let img = coordinate_image(90, 70);
        let mut cfg = geometric(64, 0.0);
        // round(64 / 0.875) = 73: 90 x 70 -> 93 x 73, centre 64 x 64 at (14, 4).
        let full = resize(&img, 93, 73);
        let want = resize_region(
            &full,
            CropBox {
                x: 14,
                y: 4,
                width: 64,
                height: 64,
            },
            64,
            64,
        );
        assert_eq!(eval_view(&img, &cfg), want.pixels);
        // Small views: a plain resize.
        cfg.image_size = 32;
        assert_eq!(eval_view(&img, &cfg), resize(&img, 32, 32).pixels);
        // Extreme aspect ratios compute only the window.
        let strip = coordinate_image(1, 3000);
        assert_eq!(
            eval_view(&strip, &AugmentConfig::default()).len(),
            3 * 224 * 224
        );
    }

    #[test]
    fn stage2_full_crop_is_the_resized_image() {
        let img = coordinate_image(24, 24);
        let mut cfg = geometric(12, 0.0);
        cfg.image_scale = (1.0, 1.0);
        let v = stage2_view(&img, &cfg, &mut SmallRng::seed_from_u64(4));
        assert_eq!(v, resize(&img, 12, 12).pixels);
    }

    #[test]
    fn tiny_and_non_square_inputs_never_panic() {
        let mut rng = SmallRng::seed_from_u64(11);
        for &(w, h) in &[(0, 0), (1, 1), (1, 50), (50, 1), (3, 2), (7, 300)] {
            let img = coordinate_image(w, h);
            for size in [1, 2, 8, 16, 32, 64] {
                let cfg = AugmentConfig::for_image_size(size);
                let v = stage1_views(&img, &cfg, &mut rng);
                assert_eq!(v.query.len(), 3 * size * size);
                check_boxes(&v, &cfg);
                assert_eq!(stage2_view(&img, &cfg, &mut rng).len(), 3 * size * size);
                let e = eval_view(&img, &cfg);
                assert_eq!(e.len(), 3 * size * size);
                assert!(e.iter().all(|x| x.is_finite()));
            }
        }
        // Odd settings do not panic either.
        let mut cfg = AugmentConfig::for_image_size(8);
        cfg.crop_size = 0;
        cfg.image_scale = (1.0, 0.0);
        cfg.ratio = (0.0, f64::INFINITY);
        cfg.eval_crop_fraction = 0.0;
        cfg.eval_center_crop_min_size = 0;
        cfg.query.flip_p = 2.0;
        cfg.query.blur_p = 1.0;
        cfg.query.blur_sigma = (-1.0, 0.0);
        let img = coordinate_image(5, 9);
        let v = stage1_views(&img, &cfg, &mut rng);
        assert_eq!(v.crops[0].len(), 3);
        assert_eq!(eval_view(&img, &cfg).len(), 3 * 64);
    }

    #[test]
    fn same_seed_same_views() {
        let img = coordinate_image(45, 33);
        let cfg = AugmentConfig::for_image_size(32);
        let a = stage1_views(&img, &cfg, &mut SmallRng::seed_from_u64(42));
        let b = stage1_views(&img, &cfg, &mut SmallRng::seed_from_u64(42));
        let c = stage1_views(&img, &cfg, &mut SmallRng::seed_from_u64(43));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let s1 = stage2_view(&img, &cfg, &mut SmallRng::seed_from_u64(1));
        let s2 = stage2_view(&img, &cfg, &mut SmallRng::seed_from_u64(1));
        assert_eq!(s1, s2);
    }

    #[test]
    fn colour_ops_run_at_their_rates() {
        // Query: grayscale p 0.2 (sometimes all channels equal), key never grayscale.
        let img = coordinate_image(20, 20);
        let cfg = {
            let mut c = AugmentConfig::for_image_size(8);
            c.mean = [0.0; 3];
            c.std = [1.0; 3];
            c
        };
        let mut rng = SmallRng::seed_from_u64(8);
        let (mut gray_q, mut gray_k) = (0, 0);
        let n = 500;
        for _ in 0..n {
            let v = stage1_views(&img, &cfg, &mut rng);
            let is_gray = |t: &[f32]| t[..64] == t[64..128] && t[64..128] == t[128..];
            gray_q += is_gray(&v.query) as usize;
            gray_k += is_gray(&v.key) as usize;
        }
        assert_eq!(gray_k, 0);
        let rate = gray_q as f64 / n as f64;
        assert!((0.14..0.26).contains(&rate), "{rate}");
    }

    /// A uniform grey (102 / 255, on the 8-bit grid, so the blur keeps it), identity
    /// normalisation: a view stays that grey unless the jitter ran (its brightness factor moves
    /// it, almost surely); grayscale, blur, flip and crop leave it.
    const GREY: f32 = 102.0 / 255.0;

    fn grey_runs(cfg: &mut AugmentConfig) -> Image {
        cfg.mean = [0.0; 3];
        cfg.std = [1.0; 3];
        let mut img = Image::new(20, 20);
        img.pixels.fill(GREY);
        img
    }

    fn untouched(t: &[f32]) -> bool {
        t.iter().all(|v| (v - GREY).abs() < 1e-6)
    }

    #[test]
    fn key_jitter_always_runs() {
        // main.py's k_augmentation: RandomApply([ColorJitter(0.4, 0.4, 0.4, 0)], p = 1.0). The
        // query's jitter (p 0.8) leaves about a fifth of the views alone.
        let mut cfg = AugmentConfig::for_image_size(8);
        let img = grey_runs(&mut cfg);
        let mut rng = SmallRng::seed_from_u64(5);
        let (mut plain_q, mut plain_k) = (0, 0);
        let n = 400;
        for _ in 0..n {
            let v = stage1_views(&img, &cfg, &mut rng);
            plain_q += untouched(&v.query) as usize;
            plain_k += untouched(&v.key) as usize;
        }
        assert_eq!(plain_k, 0);
        let rate = plain_q as f64 / n as f64;
        assert!((0.14..0.26).contains(&rate), "{rate}");
    }

    #[test]
    fn stage2_runs_the_official_colour_operations() {
        // equal_lincls.py: jitter p 0.8, grayscale p 0.2, blur p 0.5, flip.
        let mut cfg = AugmentConfig::for_image_size(8);
        let grey = grey_runs(&mut cfg);
        let img = coordinate_image(20, 20);
        let mut rng = SmallRng::seed_from_u64(6);
        let (mut plain, mut gray) = (0, 0);
        let n = 500;
        for _ in 0..n {
            plain += untouched(&stage2_view(&grey, &cfg, &mut rng)) as usize;
            let t = stage2_view(&img, &cfg, &mut rng);
            gray += (t[..64] == t[64..128] && t[64..128] == t[128..]) as usize;
        }
        let (plain, gray) = (plain as f64 / n as f64, gray as f64 / n as f64);
        assert!((0.14..0.26).contains(&plain), "unjittered {plain}");
        assert!((0.14..0.26).contains(&gray), "grayscale {gray}");
    }
}
