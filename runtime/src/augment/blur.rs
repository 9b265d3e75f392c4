//! Gaussian blur: torchvision's `gaussian_blur` (a normalised Gaussian kernel, the same size
//! and sigma on both axes, reflect padding), applied separably.

use crate::image::Image;

/// The kernel size for an image whose shorter side is `side`: the odd number nearest to 10%
/// of the side, at least 3 (torchvision's SimCLR/BYOL examples use 23 for 224 px).
pub fn kernel_size_for(side: usize) -> usize {
    let k = (side as f64 * 0.1).round() as usize;
    (k | 1).max(3)
}

/// torchvision's `_get_gaussian_kernel1d`: `exp(-x^2 / (2 sigma^2))` at
/// `x = -(k-1)/2 ..= (k-1)/2`, normalised to sum 1. A non-positive or non-finite sigma gives
/// the identity kernel.
pub fn gaussian_kernel(size: usize, sigma: f32) -> Vec<f32> {
    let size = size.max(1);
    let half = (size - 1) as f64 * 0.5;
    if !(sigma > 0.0 && sigma.is_finite()) {
        let mut k = vec![0.0; size];
        k[size / 2] = 1.0;
        return k;
    }
    let s = sigma as f64;
    let pdf: Vec<f64> = (0..size)
        .map(|i| {
            let x = (i as f64 - half) / s;
            (-0.5 * x * x).exp()
        })
        .collect();
    let total: f64 = pdf.iter().sum();
    pdf.iter().map(|p| (p / total) as f32).collect()
}

/// Reflect (mirror without repeating the edge) index `i` into `0..n`, as torch's `reflect`
/// padding; it keeps reflecting when the padding exceeds the image (where torch would refuse).
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m >= n as isize { period - m } else { m }) as usize
}

/// Blurs `img` with a `size x size` Gaussian of standard deviation `sigma` (pixels).
pub fn gaussian_blur(img: &mut Image, size: usize, sigma: f32) {
    let (w, h) = (img.width, img.height);
    if w == 0 || h == 0 {
        return;
    }
    let kernel = gaussian_kernel(size, sigma);
    let r = (kernel.len() / 2) as isize;
    // Source indices of each tap, per output position, for both axes.
    let taps = |n: usize| -> Vec<usize> {
        (0..n as isize)
            .flat_map(|i| (-r..=r).map(move |d| reflect(i + d, n)))
            .collect()
    };
    let (tx, ty) = (taps(w), taps(h));
    let k = kernel.len();
    let mut tmp = vec![0.0f32; w * h];
    for ch in img.pixels.chunks_exact_mut(w * h) {
        for y in 0..h {
            let row = &ch[y * w..(y + 1) * w];
            for x in 0..w {
                tmp[y * w + x] = kernel
                    .iter()
                    .zip(&tx[x * k..(x + 1) * k])
                    .map(|(kv, &j)| kv * row[j])
                    .sum();
            }
        }
        for y in 0..h {
            let dst = &mut ch[y * w..(y + 1) * w];
            dst.fill(0.0);
            for (kv, &j) in kernel.iter().zip(&ty[y * k..(y + 1) * k]) {
                for (d, s) in dst.iter_mut().zip(&tmp[j * w..(j + 1) * w]) {
                    *d += kv * s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sizes_scale_with_the_image() {
        assert_eq!(kernel_size_for(224), 23);
        assert_eq!(kernel_size_for(32), 3);
        assert_eq!(kernel_size_for(64), 7);
        assert_eq!(kernel_size_for(96), 11);
        assert_eq!(kernel_size_for(1), 3);
        assert_eq!(kernel_size_for(0), 3);
    }

    #[test]
    fn kernel_is_normalised_and_symmetric() {
        let k = gaussian_kernel(23, 1.3);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        for i in 0..23 {
            assert!((k[i] - k[22 - i]).abs() < 1e-9);
        }
        assert!(k[11] > k[10] && k[10] > k[9]);
        assert_eq!(gaussian_kernel(3, 0.0), vec![0.0, 1.0, 0.0]);
    }

    #[test]
    fn reflect_indices() {
        let got: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        assert_eq!(reflect(-5, 1), 0);
    }

    #[test]
    fn constant_image_is_unchanged() {
        let mut img = Image::new(9, 6);
        img.pixels.fill(0.37);
        gaussian_blur(&mut img, 23, 2.0);
        assert!(img.pixels.iter().all(|v| (v - 0.37).abs() < 1e-6));
    }

    #[test]
    fn interior_impulse_keeps_its_sum_and_spreads_as_the_kernel() {
        let (w, h) = (15, 15);
        let mut img = Image::new(w, h);
        img.pixels[7 * w + 7] = 1.0;
        gaussian_blur(&mut img, 5, 1.0);
        let k = gaussian_kernel(5, 1.0);
        let sum: f32 = img.channel(0).iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        for dy in 0..5 {
            for dx in 0..5 {
                let got = img.pixels[(5 + dy) * w + 5 + dx];
                assert!((got - k[dy] * k[dx]).abs() < 1e-7);
            }
        }
        assert!(img.channel(1).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn edge_uses_reflection() {
        // A single row 1 x 3 [a, b, c] with a 3-tap kernel [p, q, p]: the left output is
        // p*b + q*a + p*b (reflect mirrors b into the padding).
        let mut img = Image::new(3, 1);
        img.pixels[..3].copy_from_slice(&[1.0, 2.0, 4.0]);
        let k = gaussian_kernel(3, 0.8);
        gaussian_blur(&mut img, 3, 0.8);
        let want = k[0] * 2.0 + k[1] * 1.0 + k[2] * 2.0;
        assert!((img.pixels[0] - want).abs() < 1e-6);
    }

    #[test]
    fn tiny_images_do_not_panic() {
        for &(w, h) in &[(1, 1), (1, 4), (2, 2), (3, 1)] {
            let mut img = Image::new(w, h);
            img.pixels.fill(0.5);
            gaussian_blur(&mut img, 23, 1.5);
            assert!(img.pixels.iter().all(|v| (v - 0.5).abs() < 1e-6));
        }
        gaussian_blur(&mut Image::new(0, 3), 3, 1.0);
    }
}
