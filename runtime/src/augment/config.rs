//! The augmentation settings: sizes, scale ranges, and per view which random operations run
//! with which probability. Every field is public and can be overridden after
//! [`AugmentConfig::for_image_size`].

use super::colour::Jitter;
use super::normalise::{IMAGENET_MEAN, IMAGENET_STD};

/// The random operations of one view, in the order they run after the view's resized crop:
/// horizontal flip, colour jitter, grayscale, Gaussian blur. Each runs with its probability
/// (`<= 0`: never, no further draws; `>= 1`: always).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewOps {
    pub flip_p: f64,
    pub jitter: Jitter,
    pub jitter_p: f64,
    pub grayscale_p: f64,
    pub blur_p: f64,
    /// The blur's sigma (pixels) is uniform in this range.
    pub blur_sigma: (f32, f32),
}

impl ViewOps {
    /// The query view and the PBSD crops: flip 0.5, `ColorJitter(0.4, 0.4, 0.4, 0.1)` with
    /// p 0.8, grayscale 0.2, blur (sigma in [0.1, 2]) 0.5.
    pub const QUERY: ViewOps = ViewOps {
        flip_p: 0.5,
        jitter: Jitter::new(0.4, 0.4, 0.4, 0.1),
        jitter_p: 0.8,
        grayscale_p: 0.2,
        blur_p: 0.5,
        blur_sigma: (0.1, 2.0),
    };
    /// The key view: flip 0.5, `ColorJitter(0.4, 0.4, 0.4, 0)` with p 0.8; no grayscale, no
    /// blur.
    pub const KEY: ViewOps = ViewOps {
        flip_p: 0.5,
        jitter: Jitter::new(0.4, 0.4, 0.4, 0.0),
        jitter_p: 0.8,
        grayscale_p: 0.0,
        blur_p: 0.0,
        blur_sigma: (0.1, 2.0),
    };
    /// Flip 0.5 only (stage 2).
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
    /// [`dscl_core::loss::DEFAULT_CROPS`] crops, ImageNet normalisation.
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
            stage2: ViewOps::FLIP_ONLY,
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
}
