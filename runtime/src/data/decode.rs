//! PNG and JPEG decoding into the runtime's [`Image`]: 3 channels, planar, f32 in [0, 1].
//!
//! The format is recognised from the file's first bytes, not its extension: data sets often
//! carry PNGs named `.jpg` (and the reverse), and the content is what matters. Grayscale and
//! grayscale+alpha images are expanded to three channels and alpha is dropped, because the
//! model always takes RGB input and the long-tailed benchmarks contain some grayscale
//! images.

use std::io::Cursor;
use std::path::Path;

use anyhow::{bail, Context};
use image::{DynamicImage, ImageFormat, ImageReader};

use crate::image::Image;

/// Reads and decodes the PNG or JPEG file at `path`. A missing, unreadable, truncated or
/// corrupt file is an error naming `path`.
pub fn decode_image_file(path: &Path) -> anyhow::Result<Image> {
    let bytes = std::fs::read(path).with_context(|| format!("reading image {}", path.display()))?;
    decode_image_bytes(&bytes).with_context(|| format!("decoding image {}", path.display()))
}

/// Decodes an in-memory PNG or JPEG file. Errors do not name a file; callers add it.
pub fn decode_image_bytes(bytes: &[u8]) -> anyhow::Result<Image> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .context("reading the image header")?;
    match reader.format() {
        Some(ImageFormat::Png) | Some(ImageFormat::Jpeg) => {}
        Some(other) => bail!("unsupported image format {other:?} (only PNG and JPEG are read)"),
        None if bytes.is_empty() => bail!("empty file"),
        None => bail!("not a PNG or JPEG file"),
    }
    let decoded = reader.decode()?;
    Ok(to_planar(decoded))
}

/// Converts any decoded colour type to 3-channel planar f32: 8-bit images directly from
/// their bytes, deeper ones through f32 so no precision is lost before normalisation.
fn to_planar(decoded: DynamicImage) -> Image {
    let (width, height) = (decoded.width() as usize, decoded.height() as usize);
    match decoded {
        DynamicImage::ImageLuma8(gray) => Image::from_gray(width, height, gray.as_raw(), 255.0),
        DynamicImage::ImageRgb8(rgb) => Image::from_rgb8(width, height, rgb.as_raw()),
        other if other.color().bytes_per_pixel() / other.color().channel_count() == 1 => {
            Image::from_rgb8(width, height, other.to_rgb8().as_raw())
        }
        other => {
            let rgb = other.to_rgb32f();
            let plane = width * height;
            let mut pixels = vec![0.0; 3 * plane];
            for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
                for c in 0..3 {
                    pixels[c * plane + i] = px[c].clamp(0.0, 1.0);
                }
            }
            Image {
                width,
                height,
                pixels,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayAlphaImage, GrayImage, ImageBuffer, Luma, Rgb, RgbImage, Rgba, RgbaImage};

    fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn rgb_png_is_planar_and_exact() {
        let img = RgbImage::from_fn(3, 2, |x, y| Rgb([(x * 50) as u8, (y * 100) as u8, 255]));
        let decoded = decode_image_bytes(&encode(img.into(), ImageFormat::Png)).unwrap();
        assert_eq!((decoded.width, decoded.height), (3, 2));
        // x = 2, y = 1: R = 100, G = 100, B = 255.
        let i = 3 + 2;
        assert_eq!(decoded.channel(0)[i], 100.0 / 255.0);
        assert_eq!(decoded.channel(1)[i], 100.0 / 255.0);
        assert_eq!(decoded.channel(2)[i], 1.0);
    }

    #[test]
    fn gray_and_gray_alpha_expand_to_three_channels() {
        let gray = GrayImage::from_fn(4, 4, |x, _| Luma([(x * 60) as u8]));
        let decoded = decode_image_bytes(&encode(gray.into(), ImageFormat::Png)).unwrap();
        assert_eq!(decoded.channel(0), decoded.channel(1));
        assert_eq!(decoded.channel(0), decoded.channel(2));
        assert_eq!(decoded.channel(0)[3], 180.0 / 255.0);

        let ga = GrayAlphaImage::from_fn(2, 2, |_, _| image::LumaA([51, 0]));
        let decoded = decode_image_bytes(&encode(ga.into(), ImageFormat::Png)).unwrap();
        assert!(
            decoded.pixels.iter().all(|&v| v == 51.0 / 255.0),
            "alpha dropped"
        );
    }

    #[test]
    fn rgba_and_16_bit_drop_alpha() {
        let rgba = RgbaImage::from_fn(2, 1, |_, _| Rgba([255, 0, 51, 0]));
        let decoded = decode_image_bytes(&encode(rgba.into(), ImageFormat::Png)).unwrap();
        assert_eq!(decoded.pixels, vec![1.0, 1.0, 0.0, 0.0, 0.2, 0.2]);

        let deep: ImageBuffer<Luma<u16>, Vec<u16>> =
            ImageBuffer::from_fn(1, 1, |_, _| Luma([65535]));
        let decoded =
            decode_image_bytes(&encode(DynamicImage::ImageLuma16(deep), ImageFormat::Png)).unwrap();
        assert_eq!(decoded.pixels, vec![1.0, 1.0, 1.0]);
    }

    #[test]
    fn jpeg_decodes_approximately() {
        let img = RgbImage::from_fn(16, 16, |_, _| Rgb([200, 100, 50]));
        let decoded = decode_image_bytes(&encode(img.into(), ImageFormat::Jpeg)).unwrap();
        assert_eq!((decoded.width, decoded.height), (16, 16));
        let mean = |c: usize| decoded.channel(c).iter().sum::<f32>() / 256.0;
        assert!((mean(0) - 200.0 / 255.0).abs() < 0.03);
        assert!((mean(1) - 100.0 / 255.0).abs() < 0.03);
        assert!((mean(2) - 50.0 / 255.0).abs() < 0.03);
    }

    #[test]
    fn garbage_empty_and_truncated_are_errors() {
        assert!(decode_image_bytes(b"").is_err());
        assert!(decode_image_bytes(b"hello, not an image").is_err());
        let img = RgbImage::from_fn(32, 32, |x, y| Rgb([x as u8 * 7, y as u8 * 5, 3]));
        let png = encode(img.clone().into(), ImageFormat::Png);
        assert!(decode_image_bytes(&png[..png.len() / 2]).is_err());
        let jpeg = encode(img.into(), ImageFormat::Jpeg);
        assert!(decode_image_bytes(&jpeg[..jpeg.len() / 2]).is_err());
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.png");
        let err = format!("{:#}", decode_image_file(&missing).unwrap_err());
        assert!(err.contains("missing.png"), "{err}");
    }
}
