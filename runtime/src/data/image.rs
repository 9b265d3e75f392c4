//! A decoded image as the runtime passes it between loading, augmentation and the model:
//! 3 channels, planar (CHW), f32 values in [0, 1] before normalisation.

/// A 3-channel planar image: `pixels[c * height * width + y * width + x]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
}

impl Image {
    /// A black image.
    pub fn new(width: usize, height: usize) -> Self {
        Image {
            width,
            height,
            pixels: vec![0.0; 3 * width * height],
        }
    }

    /// From 8-bit grayscale rows (`width * height` bytes): the value is copied to all three
    /// channels, scaled by `1 / max_value`.
    pub fn from_gray(width: usize, height: usize, gray: &[u8], max_value: f32) -> Self {
        let plane = width * height;
        let mut pixels = vec![0.0; 3 * plane];
        for (i, &g) in gray[..plane].iter().enumerate() {
            let v = g as f32 / max_value;
            pixels[i] = v;
            pixels[plane + i] = v;
            pixels[2 * plane + i] = v;
        }
        Image {
            width,
            height,
            pixels,
        }
    }

    /// From interleaved 8-bit RGB (`width * height * 3` bytes).
    pub fn from_rgb8(width: usize, height: usize, rgb: &[u8]) -> Self {
        let plane = width * height;
        let mut pixels = vec![0.0; 3 * plane];
        for (i, px) in rgb[..3 * plane].chunks_exact(3).enumerate() {
            for c in 0..3 {
                pixels[c * plane + i] = px[c] as f32 / 255.0;
            }
        }
        Image {
            width,
            height,
            pixels,
        }
    }

    pub fn plane(&self) -> usize {
        self.width * self.height
    }

    /// Channel `c` as a row-major plane.
    pub fn channel(&self, c: usize) -> &[f32] {
        &self.pixels[c * self.plane()..(c + 1) * self.plane()]
    }
}
