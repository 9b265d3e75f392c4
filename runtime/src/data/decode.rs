//! PNG and JPEG decoding into the runtime's [`Image`]: 3 channels, planar, f32 in [0, 1].
//!
//! The format is recognised from the file's first bytes, not its extension: data sets often
//! carry PNGs named `.jpg` (and the reverse), and the content is what matters. Grayscale and
//! grayscale+alpha images are expanded to three channels and alpha is dropped, because the
//! model always takes RGB input and the long-tailed benchmarks contain some grayscale
//! images.

use crate::io::bounded_read::{read_file, FileKind};
use std::io::Cursor;
use std::path::Path;

use anyhow::{bail, Context};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::Image;

/// Reads and decodes the PNG or JPEG file at `path`. A missing, unreadable, truncated or
/// corrupt file is an error naming `path`.
pub fn decode_image_file(path: &Path) -> anyhow::Result<Image> {
    let bytes = read_file(path, FileKind::Image)?;
    decode_image_bytes(&bytes).with_context(|| format!("decoding image {}", path.display()))
}

/// Most pixels an image may have: Pillow's decompression-bomb limit, so the runtime reads every
/// image the official PyTorch pipeline reads. Checked from the header, before decoding: a few
/// bytes must not make the loader allocate gigabytes (planar f32 is 12 bytes a pixel).
pub const MAX_IMAGE_PIXELS: u64 = 89_478_485;

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
    let decoder = reader.into_decoder()?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_IMAGE_PIXELS {
        bail!(
            "the image is {width} x {height} = {pixels} pixels, more than the {MAX_IMAGE_PIXELS}              accepted (Pillow's decompression-bomb limit)"
        );
    }
    let decoded = DynamicImage::from_decoder(decoder)?;
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

    /// A PNG whose header claims `width x height` (8-bit RGB) and whose data is one empty
    /// IDAT chunk: enough for the header to be read, never enough to decode.
    fn png_header_only(width: u32, height: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            png.extend_from_slice(&body);
            png.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        };
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        chunk(b"IHDR", &ihdr);
        chunk(b"IDAT", &[]);
        chunk(b"IEND", &[]);
        png
    }

    #[test]
    fn an_image_over_the_pixel_limit_is_refused_from_its_header() {
        // 20000 x 20000 would be 4.8 GB as planar f32; the refusal comes before any of it.
        let err = decode_image_bytes(&png_header_only(20_000, 20_000)).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("20000 x 20000 = 400000000 pixels") && text.contains("89478485"),
            "{text}"
        );
        // Just under the limit, the header passes and the (empty) data is what fails.
        let err = decode_image_bytes(&png_header_only(9_459, 9_459)).unwrap_err();
        assert!(!format!("{err:#}").contains("pixels"), "{err:#}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.png");
        let err = format!("{:#}", decode_image_file(&missing).unwrap_err());
        assert!(err.contains("missing.png"), "{err}");
    }
}
