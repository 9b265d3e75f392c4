//! The augmentation settings: sizes, scale ranges, and per view which random operations run
//! with which probability. Every field is public and can be overridden after
//! [`AugmentConfig::for_image_size`].

use super::colour::Jitter;
use super::normalise::{IMAGENET_MEAN, IMAGENET_STD};

/// The random operations of one view, in the order they run after the view's resized crop:
/// horizontal flip, colour jitter, grayscale, Gaussian blur. Each runs with its probability
/// (`<= 0`: never; `>= 1`: always).
///
/// The official transforms put the flip elsewhere in some views (the key view and stage 2 flip
/// last). The flip commutes with the others (jitter and grayscale act per pixel; the blur is
/// symmetric, edges included), so the view's pixels have the same distribution either way; only
/// the order of the random draws differs, and those never follow torch's generator anyway.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewOps {
    pub flip_p: f64,
    pub jitter: Jitter,
    pub jitter_p: f64,
    pub grayscale_p: f64,
    pub blur_p: f64,
    /// The blur's sigma (pixels) is uniform in this range; the blur is Pillow's
    /// `GaussianBlur(radius = sigma)` ([`super::blur::gaussian_blur`]).
    pub blur_sigma: (f32, f32),
}

impl ViewOps {
    /// The query view and the PBSD crops, as the official stage-1 loader (`main.py`:
    /// `q_augmentation` and `small_augmentation`; the query's flip is
    /// `SmallGlobalRandomResizedCrop(flip_p = 0.5)` in `dscl/loader_roi.py`, applied to the
    /// first global crop only): flip 0.5, `RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)],
    /// p = 0.8)`, `RandomGrayscale(p = 0.2)`, `RandomApply([GaussianBlur([0.1, 2.0])], p = 0.5)`.
    pub const QUERY: ViewOps = ViewOps {
        flip_p: 0.5,
        jitter: Jitter::new(0.4, 0.4, 0.4, 0.1),
        jitter_p: 0.8,
        grayscale_p: 0.2,
        blur_p: 0.5,
        blur_sigma: (0.1, 2.0),
    };
    /// The key view, as the official stage-1 loader (`main.py`: `k_augmentation`, on the second
    /// global crop, which the crop itself never flips): `RandomApply([ColorJitter(0.4, 0.4, 0.4,
    /// 0.0)], p = 1.0)`, i.e. the jitter **always** runs (the query's runs with p 0.8) and never
    /// shifts hue; then `RandomHorizontalFlip()` (0.5). No grayscale, no blur.
    pub const KEY: ViewOps = ViewOps {
        flip_p: 0.5,
        jitter: Jitter::new(0.4, 0.4, 0.4, 0.0),
        jitter_p: 1.0,
        grayscale_p: 0.0,
        blur_p: 0.0,
        blur_sigma: (0.1, 2.0),
    };
    /// Stage 2, the official linear classifier's training transform (`equal_lincls.py`:
    /// `RandomResizedCrop(224)` with the default scale (0.08, 1) and ratio (3/4, 4/3), then
    /// `RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p = 0.8)`, `RandomGrayscale(p = 0.2)`,
    /// `RandomApply([GaussianBlur([0.1, 2.0])], p = 0.5)`, `RandomHorizontalFlip()` last): the
    /// same operations and numbers as [`ViewOps::QUERY`].
    pub const LINEAR_CLASSIFIER: ViewOps = ViewOps {
        flip_p: 0.5,
        jitter: Jitter::new(0.4, 0.4, 0.4, 0.1),
        jitter_p: 0.8,
        grayscale_p: 0.2,
        blur_p: 0.5,
        blur_sigma: (0.1, 2.0),
    };
    /// Flip 0.5 only: `RandomResizedCrop` + `RandomHorizontalFlip`, the plain supervised recipe
    /// (the cross-entropy baseline's training view).
    pub const FLIP_ONLY: ViewOps = ViewOps {
        flip_p: 0.5,
        jitter: Jitter::NONE,
        jitter_p: 0.0,
        grayscale_p: 0.0,
        blur_p: 0.0,
        blur_sigma: (0.1, 2.0),
    };

    /// The same view with its colour operations (jitter, grayscale, blur) switched off.
    pub fn without_colour(self) -> Self {
        ViewOps {
            jitter_p: 0.0,
            grayscale_p: 0.0,
            blur_p: 0.0,
            ..self
        }
    }
}

/// All augmentation settings. Sizes are in pixels; `image_scale` and `crop_scale` are area
/// fractions of the image the crop is cut from, `ratio` the width / height range of
/// `RandomResizedCrop`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AugmentConfig {
    /// `S`: side of the query, key, stage-2 and evaluation views.
    pub image_size: usize,
    /// `s`: side of each PBSD crop.
    pub crop_size: usize,
    /// `C`: PBSD crops per image.
    pub crops: usize,
    /// Area fraction of the source image for the query, key and stage-2 crops.
    pub image_scale: (f64, f64),
    /// Area fraction of the `S x S` query crop for each PBSD crop.
    pub crop_scale: (f64, f64),
    /// Aspect ratio (width / height) range of every random resized crop.
    pub ratio: (f64, f64),
    pub query: ViewOps,
    pub key: ViewOps,
    pub crop: ViewOps,
    /// The view of [`super::stage2_view`]: stage 2's training view.
    pub stage2: ViewOps,
    /// Evaluation: the shorter side is resized to `round(S / eval_crop_fraction)` then the
    /// centre `S x S` is cut (0.875: 256 -> 224) ...
    pub eval_crop_fraction: f64,
    /// ... for `S >= eval_center_crop_min_size`; smaller views are a plain resize to `S x S`.
    pub eval_center_crop_min_size: usize,
    /// `Normalize` per channel (RGB).
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl AugmentConfig {
    /// The published recipe scaled to views of `image_size` pixels: crops of 64 px at 224
    /// (`round(S * 2 / 7)` from 64 px up), half the image below 64 px (32 -> 16, 8 -> 4),
    /// [`dscl_core::loss::DEFAULT_CROPS`] crops, ImageNet normalisation; the official loaders'
    /// operations per view ([`ViewOps::QUERY`] for the query and the crops, [`ViewOps::KEY`],
    /// [`ViewOps::LINEAR_CLASSIFIER`] for stage 2).
    pub fn for_image_size(image_size: usize) -> Self {
        let s = image_size.max(1);
        let crop_size = if s >= 64 {
            (s as f64 * 64.0 / 224.0).round() as usize
        } else {
            (s / 2).max(1)
        };
        AugmentConfig {
            image_size: s,
            crop_size,
            crops: dscl_core::loss::DEFAULT_CROPS,
            image_scale: (0.08, 1.0),
            crop_scale: (0.05, 0.6),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            query: ViewOps::QUERY,
            key: ViewOps::KEY,
            crop: ViewOps::QUERY,
            stage2: ViewOps::LINEAR_CLASSIFIER,
            eval_crop_fraction: 0.875,
            eval_center_crop_min_size: 64,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// The same settings with every colour operation off (geometry only): for inspecting and
    /// testing the crops.
    pub fn without_colour(self) -> Self {
        AugmentConfig {
            query: self.query.without_colour(),
            key: self.key.without_colour(),
            crop: self.crop.without_colour(),
            stage2: self.stage2.without_colour(),
            ..self
        }
    }
}

impl Default for AugmentConfig {
    /// The published ImageNet-LT recipe (224 px).
    fn default() -> Self {
        AugmentConfig::for_image_size(224)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_scale_with_the_data() {
        let c = AugmentConfig::default();
        assert_eq!((c.image_size, c.crop_size), (224, 64));
        assert_eq!(c.crops, dscl_core::loss::DEFAULT_CROPS);
        assert_eq!(AugmentConfig::for_image_size(32).crop_size, 16);
        assert_eq!(AugmentConfig::for_image_size(16).crop_size, 8);
        assert_eq!(AugmentConfig::for_image_size(8).crop_size, 4);
        assert_eq!(AugmentConfig::for_image_size(1).crop_size, 1);
        assert_eq!(AugmentConfig::for_image_size(0).image_size, 1);
        let off = c.without_colour();
        assert_eq!(
            off.query.jitter_p + off.query.grayscale_p + off.query.blur_p,
            0.0
        );
        assert_eq!(off.query.flip_p, 0.5);
    }

    #[test]
    fn views_are_the_official_loaders() {
        let ops = |flip_p, jitter, jitter_p, grayscale_p, blur_p| ViewOps {
            flip_p,
            jitter,
            jitter_p,
            grayscale_p,
            blur_p,
            blur_sigma: (0.1, 2.0),
        };
        // main.py q_augmentation / small_augmentation (+ the query crop's flip_p 0.5).
        let query = ops(0.5, Jitter::new(0.4, 0.4, 0.4, 0.1), 0.8, 0.2, 0.5);
        // main.py k_augmentation: ColorJitter(0.4, 0.4, 0.4, 0.0) with p = 1.0, then a flip.
        let key = ops(0.5, Jitter::new(0.4, 0.4, 0.4, 0.0), 1.0, 0.0, 0.0);
        // equal_lincls.py: jitter p 0.8, grayscale 0.2, blur [0.1, 2] p 0.5, flip.
        let linear = ops(0.5, Jitter::new(0.4, 0.4, 0.4, 0.1), 0.8, 0.2, 0.5);
        assert_eq!(ViewOps::QUERY, query);
        assert_eq!(ViewOps::KEY, key);
        assert_eq!(ViewOps::KEY.jitter_p, 1.0);
        assert_eq!(ViewOps::LINEAR_CLASSIFIER, linear);
        let c = AugmentConfig::default();
        assert_eq!(
            (c.query, c.key, c.crop, c.stage2),
            (query, key, query, linear)
        );
        // SmallGlobalRandomResizedCrop(scale = (0.08, 1.0), small_scale = (0.05, 0.6),
        // small_size = 64, size = 224); RandomResizedCrop(224)'s defaults for stage 2.
        assert_eq!(c.image_scale, (0.08, 1.0));
        assert_eq!(c.crop_scale, (0.05, 0.6));
        assert_eq!(c.ratio, (3.0 / 4.0, 4.0 / 3.0));
        assert_eq!(
            AugmentConfig::for_image_size(32).stage2,
            ViewOps::LINEAR_CLASSIFIER
        );
    }
}
