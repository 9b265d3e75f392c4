//! Gaussian blur as the official loaders run it: Pillow's `ImageFilter.GaussianBlur(radius =
//! sigma)` (`dscl/loader_roi.py`, class `GaussianBlur`, on 8-bit PIL images). Pillow does not
//! convolve with a sampled Gaussian: `ImagingGaussianBlur` (`src/libImaging/BoxBlur.c`) runs
//! [`PIL_PASSES`] passes of an *extended box* filter along rows, then as many along columns, with
//! edge pixels repeated beyond the border, rounding to 8 bits after every pass. The box radius
//! `l + a` (integer part `l`, fraction `a`) is chosen so that the passes together have variance
//! exactly `sigma^2` (Gwosdek et al., "Theoretical foundations of Gaussian convolution by
//! extended box filtering", SSVM 2011): the `2 l + 1` inner taps weigh `ww`, the two taps at
//! distance `l + 1` weigh `fw`, both in Pillow's 24-bit fixed point. The filter is never
//! truncated: at sigma 2 it reaches 6 pixels either side whatever the image size, and an
//! impulse spreads with standard deviation 2.
//!
//! [`gaussian_blur`] blurs the runtime's `f32` images as Pillow blurs the same image in 8 bits:
//! the values are rounded to the 8-bit grid (where the official pipeline's PIL image always
//! is), blurred with Pillow's integer arithmetic bit for bit and returned as `v / 255`, what
//! `ToTensor` reads. Rounding matters: at small sigma the unrounded filter moves a pixel next
//! to a strong edge by up to 3 units of 255 that Pillow's per-pass rounding takes back.
//! [`pil_gaussian_blur_u8`] is the same on an 8-bit plane. The test in `reference.rs` checks
//! both against Pillow's own outputs. [`torchvision_gaussian_blur`] is torchvision's tensor
//! `gaussian_blur` (a sampled, truncated Gaussian), kept for comparison.

use crate::data::Image;

/// Box passes per axis: Pillow's default for `GaussianBlur`.
pub const PIL_PASSES: u32 = 3;

/// `1.0` in Pillow's fixed point.
const ONE: u64 = 1 << 24;

/// Pillow's `_gaussian_blur_radius`: the extended-box radius `l + a` whose `passes` passes make
/// a blur of standard deviation `sigma`, in the same `f32` / `f64` arithmetic as the C code
/// (so the integer weights of [`BoxKernel::for_radius`] come out identical).
pub fn pil_box_radius(sigma: f32, passes: u32) -> f32 {
    let sigma2 = sigma * sigma / passes.max(1) as f32;
    // [7] box length, [11] its integer radius (double precision in C), [14] the fraction.
    let length = (12.0 * sigma2 as f64 + 1.0).sqrt() as f32;
    let l = ((length as f64 - 1.0) / 2.0).floor() as f32;
    let mut a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    a /= 6.0 * (sigma2 - (l + 1.0) * (l + 1.0));
    l + a
}

/// One extended box: `2 radius + 1` inner taps of weight `ww / 2^24` and one tap of weight
/// `fw / 2^24` at each of `-(radius + 1)` and `radius + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoxKernel {
    pub radius: usize,
    pub ww: u64,
    pub fw: u64,
}

impl BoxKernel {
    /// `ImagingHorizontalBoxBlur`'s weights for a box of (fractional) radius `r >= 0`:
    /// `ww = (u32)(2^24 / (2 r + 1))` in `f32`, `fw = (2^24 - (2 floor(r) + 1) ww) / 2`.
    pub fn for_radius(r: f32) -> Self {
        let r = if r.is_finite() { r.max(0.0) } else { 0.0 };
        // C's (int) and (UINT32) conversions truncate; `as` saturates where C would overflow.
        let radius = (r as u32) as usize;
        let ww = (ONE as f32 / (r * 2.0 + 1.0)) as u32 as u64;
        let fw = ONE.saturating_sub((2 * radius as u64 + 1) * ww) / 2;
        BoxKernel { radius, ww, fw }
    }

    /// The kernel of one of Pillow's [`PIL_PASSES`] passes for a blur of `sigma`.
    pub fn for_sigma(sigma: f32) -> Self {
        BoxKernel::for_radius(pil_box_radius(sigma, PIL_PASSES))
    }

    /// The taps `-(radius + 1) ..= radius + 1` as fractions (they sum to 1 up to 2^-24 per tap
    /// lost to Pillow's truncations).
    pub fn taps(&self) -> Vec<f64> {
        let (w, f) = (self.ww as f64 / ONE as f64, self.fw as f64 / ONE as f64);
        let mut t = vec![w; 2 * self.radius + 3];
        t[0] = f;
        t[2 * self.radius + 2] = f;
        t
    }
}

/// Pillow's pass (`ImagingLineBoxBlur8`) in its own integer arithmetic over 8-bit values:
/// the unrounded pass's sums (`tests::box_line`), then `out[x] = (bulk + 2^23) >> 24`. Kept
/// in integers from the first pass to the last: converting and flooring floats around every
/// pass took most of the loader's blur time.
fn pillow_box_line(src: &[u32], out: &mut [u32], k: &BoxKernel) {
    if src.is_empty() {
        return;
    }
    let last = src.len() as isize - 1;
    let r = k.radius as isize;
    let at = |i: isize| src[i.clamp(0, last) as usize] as u64;
    let inside = (r - 1).min(last);
    let mut acc = (r + 1) as u64 * at(0)
        + src[..(inside + 1).max(0) as usize]
            .iter()
            .map(|&v| v as u64)
            .sum::<u64>()
        + (r - 1 - inside) as u64 * at(last);
    for (x, o) in out.iter_mut().enumerate() {
        let x = x as isize;
        acc = acc + at(x + r) - at(x - r - 1);
        let bulk = acc * k.ww + (at(x - r - 1) + at(x + r + 1)) * k.fw;
        *o = ((bulk + ONE / 2) >> 24) as u32;
    }
}

/// Pillow's blur of an 8-bit `w x h` plane (values 0..=255): [`PIL_PASSES`] passes along the
/// rows, then as many along the columns. The column passes run down the plane a whole row at a
/// time (every column's running sum at once, a loop over contiguous rows that vectorises)
/// rather than gathering each column: integer sums are exact in any order, so the result is
/// the column-by-column one, bit for bit.
fn pillow_blur_plane(plane: &mut [u32], w: usize, h: usize, k: &BoxKernel) {
    let mut line = vec![0u32; w];
    for row in plane.chunks_exact_mut(w) {
        for _ in 0..PIL_PASSES {
            pillow_box_line(row, &mut line, k);
            row.copy_from_slice(&line);
        }
    }
    let mut blurred = vec![0u32; w * h];
    let mut acc = vec![0u64; w];
    for _ in 0..PIL_PASSES {
        pillow_box_columns(plane, &mut blurred, w, h, k, &mut acc);
        plane.copy_from_slice(&blurred);
    }
}

/// [`pillow_box_line`] down every column of the `w x h` plane `src` at once, into `out`.
fn pillow_box_columns(
    src: &[u32],
    out: &mut [u32],
    w: usize,
    h: usize,
    k: &BoxKernel,
    acc: &mut [u64],
) {
    let last = h as isize - 1;
    let r = k.radius as isize;
    let row = |y: isize| &src[y.clamp(0, last) as usize * w..][..w];
    // The window sums centred on row -1, as the line pass starts them.
    let inside = (r - 1).min(last);
    for (a, &v) in acc.iter_mut().zip(row(0)) {
        *a = (r + 1) as u64 * v as u64;
    }
    for y in 0..=inside {
        for (a, &v) in acc.iter_mut().zip(row(y)) {
            *a += v as u64;
        }
    }
    for (a, &v) in acc.iter_mut().zip(row(last)) {
        *a += (r - 1 - inside) as u64 * v as u64;
    }
    for (y, dst) in out.chunks_exact_mut(w).enumerate() {
        let y = y as isize;
        let (enter, leave) = (row(y + r), row(y - r - 1));
        let (before, after) = (leave, row(y + r + 1));
        for x in 0..w {
            acc[x] = acc[x] + enter[x] as u64 - leave[x] as u64;
            let bulk = acc[x] * k.ww + (before[x] as u64 + after[x] as u64) * k.fw;
            dst[x] = ((bulk + ONE / 2) >> 24) as u32;
        }
    }
}

/// Blurs every channel of `img` as Pillow's `GaussianBlur(radius = sigma)` blurs the image in
/// 8 bits (see the module documentation): each value is clamped to `[0, 1]` and rounded to a
/// multiple of `1 / 255`, blurred exactly as Pillow, and the result is `k / 255`. A
/// non-positive or non-finite sigma leaves the image unchanged (Pillow copies it for radius 0).
pub fn gaussian_blur(img: &mut Image, sigma: f32) {
    let (w, h) = (img.width, img.height);
    if w == 0 || h == 0 || !(sigma > 0.0 && sigma.is_finite()) {
        return;
    }
    let k = BoxKernel::for_sigma(sigma);
    let mut bytes = vec![0u32; w * h];
    for plane in img.pixels.chunks_exact_mut(w * h) {
        for (b, v) in bytes.iter_mut().zip(plane.iter()) {
            // NaN reads as 0, as a cast to u8 would.
            *b = if v.is_nan() {
                0
            } else {
                (v.clamp(0.0, 1.0) * 255.0).round() as u32
            };
        }
        pillow_blur_plane(&mut bytes, w, h, &k);
        for (v, &b) in plane.iter_mut().zip(&bytes) {
            *v = b as f32 / 255.0;
        }
    }
}

/// Pillow's `GaussianBlur(radius = sigma)` on one 8-bit `w x h` plane, bit for bit (the same
/// arithmetic for every band of an RGB image). Non-positive or non-finite sigma: unchanged.
pub fn pil_gaussian_blur_u8(plane: &mut [u8], w: usize, h: usize, sigma: f32) {
    let plane = &mut plane[..w * h];
    if w == 0 || h == 0 || !(sigma > 0.0 && sigma.is_finite()) {
        return;
    }
    let k = BoxKernel::for_sigma(sigma);
    let mut v: Vec<u32> = plane.iter().map(|&b| b as u32).collect();
    pillow_blur_plane(&mut v, w, h, &k);
    for (b, x) in plane.iter_mut().zip(&v) {
        *b = *x as u8;
    }
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

/// torchvision's tensor `gaussian_blur`: a `size x size` sampled Gaussian of standard deviation
/// `sigma` (pixels), reflect padding. Not what the official loaders run (they use Pillow's,
/// [`gaussian_blur`]); kept for comparison with torchvision-based recipes.
pub fn torchvision_gaussian_blur(img: &mut Image, size: usize, sigma: f32) {
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
pub(super) mod tests {
    //! Besides the tests: the unrounded filter, the oracle they check Pillow's rounding
    //! against (and `reference.rs` uses).
    use super::*;

    /// One box pass over a line, edges repeated (Pillow's `ImagingLineBoxBlur*`), unrounded:
    /// `out[x] = (ww * sum(src[x - r ..= x + r]) + fw * (src[x - r - 1] + src[x + r + 1])) / 2^24`,
    /// indices clamped into the line. [`super::pillow_box_line`] is the same pass with Pillow's
    /// rounding.
    pub(in crate::augment) fn box_line(src: &[f32], out: &mut [f32], k: &BoxKernel) {
        let n = src.len();
        if n == 0 {
            return;
        }
        let last = n as isize - 1;
        let r = k.radius as isize;
        let at = |i: isize| src[i.clamp(0, last) as usize] as f64;
        // The window sum centred on -1: src[-r-1 ..= r-1], clamped, counted without a loop over r.
        let inside = (r - 1).min(last);
        let mut acc = (r + 1) as f64 * at(0)
            + src[..(inside + 1).max(0) as usize]
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>()
            + (r - 1 - inside) as f64 * at(last);
        let (ww, fw) = (k.ww as f64, k.fw as f64);
        for (x, o) in out.iter_mut().enumerate() {
            let x = x as isize;
            acc += at(x + r) - at(x - r - 1);
            let bulk = acc * ww + (at(x - r - 1) + at(x + r + 1)) * fw;
            *o = (bulk / ONE as f64) as f32;
        }
    }

    /// [`PIL_PASSES`] passes of `pass` along the rows of a `w x h` plane, then as many along its
    /// columns.
    pub(in crate::augment) fn passes_over_plane<T: Copy + Default>(
        plane: &mut [T],
        w: usize,
        h: usize,
        pass: impl Fn(&[T], &mut [T]),
    ) {
        let mut line = vec![T::default(); w.max(h)];
        let mut col = vec![T::default(); h];
        for row in plane.chunks_exact_mut(w) {
            for _ in 0..PIL_PASSES {
                pass(row, &mut line[..w]);
                row.copy_from_slice(&line[..w]);
            }
        }
        for x in 0..w {
            for (y, c) in col.iter_mut().enumerate() {
                *c = plane[y * w + x];
            }
            for _ in 0..PIL_PASSES {
                pass(&col, &mut line[..h]);
                col.copy_from_slice(&line[..h]);
            }
            for (y, c) in col.iter().enumerate() {
                plane[y * w + x] = *c;
            }
        }
    }

    /// The extended-box filter itself, unrounded, over a `w x h` plane: what the tests check
    /// Pillow's rounding against.
    pub(in crate::augment) fn box_blur_plane(plane: &mut [f32], w: usize, h: usize, k: &BoxKernel) {
        passes_over_plane(plane, w, h, |src, out| box_line(src, out, k));
    }

    /// The row-at-a-time column passes give the column-by-column blur bit for bit, on planes
    /// shorter and narrower than the kernel too.
    #[test]
    fn pillow_columns_at_once_are_the_column_by_column_blur() {
        let mut state = 0x9e37_79b9u32;
        for (w, h) in [(1, 1), (1, 5), (5, 1), (2, 3), (7, 4), (33, 19), (64, 64)] {
            let plane: Vec<u32> = (0..w * h)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state % 256
                })
                .collect();
            for sigma in [0.1f32, 0.7, 1.3, 2.0, 5.0] {
                let k = BoxKernel::for_sigma(sigma);
                let mut fast = plane.clone();
                pillow_blur_plane(&mut fast, w, h, &k);
                let mut by_column = plane.clone();
                passes_over_plane(&mut by_column, w, h, |s, o| pillow_box_line(s, o, &k));
                assert_eq!(fast, by_column, "{w}x{h} sigma {sigma}");
            }
        }
    }

    /// Variance of a normalised 1-D kernel whose taps run `-(len / 2) ..= len / 2`.
    fn variance(taps: &[f64]) -> f64 {
        let c = (taps.len() / 2) as f64;
        let total: f64 = taps.iter().sum();
        taps.iter()
            .enumerate()
            .map(|(i, t)| t * (i as f64 - c).powi(2))
            .sum::<f64>()
            / total
    }

    #[test]
    fn box_radius_and_weights_are_pillows() {
        // sigma 2, 3 passes: sigma^2 / 3 = 4 / 3, L = sqrt(17), l = 1, a = 3 (2 - 4) / (6 (4/3 - 4))
        // = 0.375.
        let r = pil_box_radius(2.0, 3);
        assert!((r - 1.375).abs() < 1e-6, "{r}");
        let k = BoxKernel::for_sigma(2.0);
        assert_eq!(k.radius, 1);
        assert_eq!(k.ww, (16777216.0f32 / 3.75) as u64);
        assert_eq!(k.fw, (16777216 - 3 * k.ww) / 2);
        // Every sigma: the weights never exceed one, and three passes have variance sigma^2
        // (the extended box's defining property), so nothing is truncated.
        let mut sigma = 0.05f32;
        while sigma < 40.0 {
            let k = BoxKernel::for_sigma(sigma);
            assert!(
                (2 * k.radius as u64 + 1) * k.ww + 2 * k.fw <= ONE,
                "{sigma}"
            );
            let taps = k.taps();
            assert!((taps.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{sigma}");
            let v = PIL_PASSES as f64 * variance(&taps);
            let want = sigma as f64 * sigma as f64;
            assert!(
                (v - want).abs() <= 1e-4 * want.max(1.0),
                "{sigma}: {v} vs {want}"
            );
            sigma *= 1.013;
        }
        assert_eq!(BoxKernel::for_radius(0.0).taps(), vec![0.0, 1.0, 0.0]);
    }

    #[test]
    fn impulse_spreads_with_standard_deviation_sigma_on_a_64px_crop() {
        // The truncated 7-tap kernel this replaced gave 1.64 at sigma 2 on a 64-px crop. The
        // filter itself (unrounded):
        let side = 64;
        for sigma in [0.5f32, 1.0, 1.3, 2.0] {
            let mut ch = vec![0.0f32; side * side];
            ch[32 * side + 32] = 1.0;
            box_blur_plane(&mut ch, side, side, &BoxKernel::for_sigma(sigma));
            let sum: f64 = ch.iter().map(|&v| v as f64).sum();
            assert!((sum - 1.0).abs() < 1e-5, "{sigma}: {sum}");
            let var_x: f64 = ch
                .iter()
                .enumerate()
                .map(|(i, &v)| v as f64 * ((i % side) as f64 - 32.0).powi(2))
                .sum();
            let std = var_x.sqrt();
            assert!((std - sigma as f64).abs() < 2e-3, "{sigma}: std {std}");
            // The support: 3 passes of a box reaching radius + 1.
            let reach = 3 * (BoxKernel::for_sigma(sigma).radius + 1);
            let row = &ch[32 * side..33 * side];
            assert!(row[32 - reach] > 0.0 && row[32 + reach] > 0.0);
            assert_eq!((row[31 - reach], row[33 + reach]), (0.0, 0.0));
        }
        // The view's blur (8-bit, rounded) of a white pixel on black at sigma 2: 13 x 13 wide
        // before rounding, what survives rounding spreads with std close to 2 too.
        let mut img = Image::new(side, side);
        img.pixels[32 * side + 32] = 1.0;
        for v in &mut img.pixels[side * side..] {
            *v = 0.5;
        }
        gaussian_blur(&mut img, 2.0);
        let ch = img.channel(0);
        let sum: f64 = ch.iter().map(|&v| v as f64).sum();
        let var_x: f64 = ch
            .iter()
            .enumerate()
            .map(|(i, &v)| v as f64 * ((i % side) as f64 - 32.0).powi(2))
            .sum::<f64>()
            / sum;
        assert!((var_x.sqrt() - 2.0).abs() < 0.15, "{}", var_x.sqrt());
        assert!(ch[32 * side + 27] > 0.0 && ch[32 * side + 37] > 0.0);
        assert!(img.channel(1).iter().all(|&v| v == 128.0 / 255.0));
    }

    #[test]
    fn constant_images_are_unchanged() {
        let mut img = Image::new(9, 6);
        img.pixels.fill(94.0 / 255.0);
        gaussian_blur(&mut img, 2.0);
        assert!(img.pixels.iter().all(|&v| v == 94.0 / 255.0));
        for v in [0u8, 1, 128, 254, 255] {
            let mut plane = vec![v; 7 * 5];
            pil_gaussian_blur_u8(&mut plane, 7, 5, 1.7);
            assert!(plane.iter().all(|&x| x == v), "{v}");
        }
    }

    #[test]
    fn blur_commutes_with_a_horizontal_flip() {
        // The filter and its edge handling are symmetric, so where a view flips (before or
        // after the blur) does not change its pixels.
        let (w, h) = (13, 8);
        let mut img = Image::new(w, h);
        for (i, v) in img.pixels.iter_mut().enumerate() {
            *v = ((i * 37) % 101) as f32 / 100.0;
        }
        let mut a = img.clone();
        super::super::crop::hflip(&mut a);
        gaussian_blur(&mut a, 1.6);
        let mut b = img;
        gaussian_blur(&mut b, 1.6);
        super::super::crop::hflip(&mut b);
        assert!(a
            .pixels
            .iter()
            .zip(&b.pixels)
            .all(|(x, y)| (x - y).abs() < 1e-6));
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        for &(w, h) in &[(1, 1), (1, 4), (2, 2), (3, 1)] {
            for sigma in [0.1f32, 1.5, 30.0, 1e30, -1.0, 0.0, f32::NAN, f32::INFINITY] {
                let mut img = Image::new(w, h);
                img.pixels.fill(0.4);
                gaussian_blur(&mut img, sigma);
                assert!(img.pixels.iter().all(|v| (v - 0.4).abs() < 1e-6), "{sigma}");
                let mut plane = vec![200u8; w * h];
                pil_gaussian_blur_u8(&mut plane, w, h, sigma);
            }
        }
        gaussian_blur(&mut Image::new(0, 3), 1.0);
        pil_gaussian_blur_u8(&mut [], 0, 3, 1.0);
    }

    #[test]
    fn torchvision_kernel_is_normalised_and_symmetric() {
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
    fn torchvision_blur_spreads_an_impulse_as_its_kernel() {
        let (w, h) = (15, 15);
        let mut img = Image::new(w, h);
        img.pixels[7 * w + 7] = 1.0;
        torchvision_gaussian_blur(&mut img, 5, 1.0);
        let k = gaussian_kernel(5, 1.0);
        let sum: f32 = img.channel(0).iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        for dy in 0..5 {
            for dx in 0..5 {
                let got = img.pixels[(5 + dy) * w + 5 + dx];
                assert!((got - k[dy] * k[dx]).abs() < 1e-7);
            }
        }
        // Reflect padding: a 1 x 3 row [a, b, c] with [p, q, p] gives p b + q a + p b on the left.
        let mut row = Image::new(3, 1);
        row.pixels[..3].copy_from_slice(&[1.0, 2.0, 4.0]);
        let k = gaussian_kernel(3, 0.8);
        torchvision_gaussian_blur(&mut row, 3, 0.8);
        assert!((row.pixels[0] - (k[0] * 2.0 + k[1] * 1.0 + k[2] * 2.0)).abs() < 1e-6);
        // Tiny images keep reflecting.
        let mut tiny = Image::new(2, 1);
        tiny.pixels.fill(0.5);
        torchvision_gaussian_blur(&mut tiny, 23, 1.5);
        assert!(tiny.pixels.iter().all(|v| (v - 0.5).abs() < 1e-6));
    }
}
