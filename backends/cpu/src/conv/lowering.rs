//! The lowering of a convolution onto GEMM operands: the sizes and blocking derived from a shape
//! and the thread count ([`Geo`]), and the copies between NCHW images and the matrices the GEMMs
//! read and write ([`im2col`] and its adjoint [`col2im`] for the input side, [`gather_out`] and
//! [`scatter_out`] for a block's `[O, nb*P]` output matrix).
//!
//! The passes in the parent module only ever see whole matrices; all of the layout's index
//! arithmetic (padding, stride, chunks of output rows, images side by side) lives here, so the
//! three passes share one copy of it and cannot disagree about where a pixel goes.

use dscl_core::desc::Conv2dShape;

/// Output pixels one forward or backward-data GEMM should cover at least: images are blocked
/// until their columns reach this many (or the thread's images run out). Small, so that the
/// column block stays in cache: measured on ResNet layers, blocking pays only for maps of a few
/// pixels (4x4: forward 1.05x, backward-data 1.5x faster), and larger blocks lose.
pub(super) const BLOCK_COLS: usize = 64;
/// Column-matrix elements above which a single image's columns are built and multiplied in
/// chunks of output rows, and the chunk size (1 MiB: it stays in L2 between im2col and GEMM
/// packing). Measured: the 7x7 stride-2 stem 1.15-1.35x faster, 56x56 3x3 forward 1.1x; at
/// 32x32 x 576 (below the threshold) chunking was neutral to 5% slower.
pub(super) const CHUNK_ABOVE: usize = 1 << 20;
const COL_CHUNK: usize = 1 << 18;
/// The same for backward-filter, whose GEMM depth is the block's pixel count: each GEMM reads
/// and writes the whole partial gradient, so deeper blocks pay (4x4 maps: 1.6x).
pub(super) const FILTER_COLS: usize = 128;

/// Sizes derived from a (checked) shape and the thread count.
pub(super) struct Geo {
    c: usize,
    h: usize,
    w: usize,
    pub(super) o: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    pub(super) ow: usize,
    /// Output pixels per image, `oh * ow`.
    pub(super) ohw: usize,
    /// GEMM depth `c * kh * kw`.
    pub(super) ckk: usize,
    /// 1x1, stride 1, no padding: the input image is its own column matrix.
    pub(super) direct: bool,
    /// Output rows per column chunk of a single-image block ([`CHUNK_ABOVE`]).
    chunk_rows: usize,
    /// Image groups (one per thread, at most one per image) and images per group.
    pub(super) groups: usize,
    pub(super) per: usize,
    /// Images per block of the forward and backward-data passes, and of backward-filter.
    pub(super) nb: usize,
    pub(super) nb_filter: usize,
    /// Workspace elements of a group: column buffer and gathered-output buffer (sized for the
    /// larger of the two blockings), then backward-filter's partial gradient.
    pub(super) col: usize,
    pub(super) blk: usize,
    partial: usize,
}

impl Geo {
    pub(super) fn new(s: &Conv2dShape, threads: usize) -> Geo {
        let (oh, ow) = (s.out_height(), s.out_width());
        let ohw = oh.saturating_mul(ow);
        let ckk = s
            .in_channels
            .saturating_mul(s.kernel_h)
            .saturating_mul(s.kernel_w);
        let direct = s.kernel_h == 1 && s.kernel_w == 1 && s.stride == 1 && s.padding == 0;
        let per = s.batch.div_ceil(threads.min(s.batch).max(1)).max(1);
        let groups = s.batch.div_ceil(per).max(1);
        let nb = BLOCK_COLS.div_ceil(ohw.max(1)).clamp(1, per);
        let nb_filter = FILTER_COLS.div_ceil(ohw.max(1)).clamp(1, per);
        let nb_max = nb.max(nb_filter);
        let cols = ohw.saturating_mul(nb_max);
        Geo {
            c: s.in_channels,
            h: s.in_height,
            w: s.in_width,
            o: s.out_channels,
            kh: s.kernel_h,
            kw: s.kernel_w,
            stride: s.stride,
            pad: s.padding,
            oh,
            ow,
            ohw,
            ckk,
            direct,
            chunk_rows: if !direct && nb == 1 && ckk.saturating_mul(ohw) > CHUNK_ABOVE {
                (COL_CHUNK / ckk.saturating_mul(ow).max(1)).max(1)
            } else {
                oh.max(1)
            },
            groups,
            per,
            nb,
            nb_filter,
            col: if direct && nb_max == 1 {
                0
            } else {
                ckk.saturating_mul(cols)
            },
            blk: if nb_max > 1 {
                s.out_channels.saturating_mul(cols)
            } else {
                0
            },
            partial: s.out_channels.saturating_mul(ckk),
        }
    }

    pub(super) fn in_image(&self) -> usize {
        self.c * self.h * self.w
    }

    pub(super) fn out_image(&self) -> usize {
        self.o * self.ohw
    }

    pub(super) fn per_group(&self) -> usize {
        self.col
            .saturating_add(self.blk)
            .saturating_add(self.partial)
    }

    /// Output columns `[lo, hi)` of kernel column `j` that read inside the input row.
    fn valid_cols(&self, j: usize) -> (usize, usize) {
        let (s, p) = (self.stride as isize, self.pad as isize);
        let j = j as isize;
        let lo = if p > j { (p - j + s - 1) / s } else { 0 };
        let last = self.w as isize - 1 + p - j;
        let hi = if last < 0 { 0 } else { last / s + 1 };
        let hi = (hi as usize).min(self.ow);
        let lo = (lo as usize).min(hi);
        (lo, hi)
    }

    /// Input row of output row `r` and kernel row `i`, if inside the input.
    fn in_row(&self, r: usize, i: usize) -> Option<usize> {
        let ih = (r * self.stride + i) as isize - self.pad as isize;
        (ih >= 0 && (ih as usize) < self.h).then_some(ih as usize)
    }
}

/// Output rows `[r0, r1)` of the images of a block: a GEMM covers the block's pixels in those
/// rows (all rows, except for a single image whose column matrix is chunked).
#[derive(Clone, Copy)]
pub(super) struct Chunk {
    pub(super) r0: usize,
    r1: usize,
}

impl Chunk {
    /// The whole map.
    pub(super) fn full(g: &Geo) -> Chunk {
        Chunk { r0: 0, r1: g.oh }
    }

    /// Pixels of one image in the chunk.
    pub(super) fn pixels(&self, g: &Geo) -> usize {
        (self.r1 - self.r0) * g.ow
    }
}

impl Geo {
    /// Calls `f` for each chunk of `chunk_rows` output rows.
    pub(super) fn for_chunks(&self, mut f: impl FnMut(Chunk)) {
        let mut r0 = 0;
        while r0 < self.oh {
            let r1 = (r0 + self.chunk_rows).min(self.oh);
            f(Chunk { r0, r1 });
            r0 = r1;
        }
    }
}

/// Column matrix of chunk `k` of the images `xs` (`nbj` of them), rows `ld = nbj * pixels`
/// long: `col[(c, i, j)][n * pixels + (r - r0, q)] = x_n[c][r * stride + i - pad][q * stride
/// + j - pad]` (0 outside the input).
pub(super) fn im2col(g: &Geo, k: Chunk, xs: &[f32], nbj: usize, col: &mut [f32]) {
    let px = k.pixels(g);
    let ld = nbj * px;
    let (in_img, plane) = (g.in_image(), g.h * g.w);
    for n in 0..nbj {
        let x = &xs[n * in_img..(n + 1) * in_img];
        if g.direct {
            for c in 0..g.c {
                col[c * ld + n * g.ohw..][..g.ohw].copy_from_slice(&x[c * plane..][..plane]);
            }
            continue;
        }
        if g.stride == 1 && g.ow == g.w {
            im2col_same_width(g, k, x, &mut col[n * px..], ld);
        } else {
            im2col_rows(g, k, x, &mut col[n * px..], ld);
        }
    }
}

/// [`im2col`] of one image `x`, output row by output row, into `col` from the image's first
/// column (rows `ld` apart): any stride and padding.
fn im2col_rows(g: &Geo, k: Chunk, x: &[f32], col: &mut [f32], ld: usize) {
    let px = k.pixels(g);
    for c in 0..g.c {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut col[((c * g.kh + i) * g.kw + j) * ld..][..px];
                let (lo, hi) = g.valid_cols(j);
                for r in k.r0..k.r1 {
                    let dst = &mut row[(r - k.r0) * g.ow..(r - k.r0 + 1) * g.ow];
                    let Some(ih) = g.in_row(r, i) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let src = &x[(c * g.h + ih) * g.w..(c * g.h + ih + 1) * g.w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if lo < hi {
                        let first = lo * g.stride + j - g.pad;
                        if g.stride == 1 {
                            dst[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                        } else {
                            for (d, q) in dst[lo..hi].iter_mut().zip(0..) {
                                *d = src[first + q * g.stride];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// [`im2col`] of one image `x` for a stride-1 convolution whose output is as wide as its input
/// (a `2 pad + 1`-wide kernel), into `col` from the image's first column (rows `ld` apart).
/// Kernel tap (i, j) reads the input plane shifted by (i - pad, j - pad), so the chunk's valid
/// rows are one contiguous run of the plane: one copy moves them, and only the border columns
/// the shift wraps into are zeroed, row by row. On the 4- to 32-pixel maps of CIFAR ResNets a
/// copy and two fills per output row were most of the lowering's time.
fn im2col_same_width(g: &Geo, k: Chunk, x: &[f32], col: &mut [f32], ld: usize) {
    let (w, px) = (g.w, k.pixels(g));
    for c in 0..g.c {
        let plane = &x[c * g.h * w..(c + 1) * g.h * w];
        for i in 0..g.kh {
            // Output rows [ra, rb) of the chunk read input rows r + i - pad inside the plane.
            let ra = k.r0.max(g.pad.saturating_sub(i));
            let rb = k.r1.min((g.h + g.pad).saturating_sub(i));
            for j in 0..g.kw {
                let row = &mut col[((c * g.kh + i) * g.kw + j) * ld..][..px];
                let (lo, hi) = g.valid_cols(j);
                if ra >= rb || lo >= hi {
                    row.fill(0.0);
                    continue;
                }
                let start = (ra - k.r0) * w + lo;
                let end = (rb - 1 - k.r0) * w + hi;
                // Input column of output column lo: lo + j - pad, never negative.
                let from = (ra + i - g.pad) * w + lo + j - g.pad;
                row[..start].fill(0.0);
                row[start..end].copy_from_slice(&plane[from..from + (end - start)]);
                row[end..].fill(0.0);
                // The run carried each row's wrapped border: columns [0, lo) of the rows after
                // the first and [hi, w) of the rows before the last read the neighbouring row.
                for r in ra + 1..rb {
                    row[(r - k.r0) * w..][..lo].fill(0.0);
                }
                for r in ra..rb - 1 {
                    row[(r - k.r0) * w + hi..(r - k.r0 + 1) * w].fill(0.0);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`] for chunk `k`: `x_n[c][r * stride + i - pad][q * stride + j - pad]
/// += col[(c, i, j)][n * pixels + (r - r0, q)]`; a 1x1 stride-1 unpadded convolution copies
/// instead (otherwise the caller zeroes `xs` before the first chunk).
///
/// `col` is the caller's scratch: a stride-1 same-width convolution zeroes its entries that
/// stand for padding, so each tap adds one contiguous run (see [`col2im_same_width`]).
pub(super) fn col2im(g: &Geo, k: Chunk, col: &mut [f32], nbj: usize, xs: &mut [f32]) {
    let px = k.pixels(g);
    let ld = nbj * px;
    let (in_img, plane) = (g.in_image(), g.h * g.w);
    for n in 0..nbj {
        let x = &mut xs[n * in_img..(n + 1) * in_img];
        if g.direct {
            for c in 0..g.c {
                x[c * plane..][..plane].copy_from_slice(&col[c * ld + n * g.ohw..][..g.ohw]);
            }
            continue;
        }
        if g.stride == 1 && g.ow == g.w {
            col2im_same_width(g, k, &mut col[n * px..], ld, x);
        } else {
            col2im_rows(g, k, &col[n * px..], ld, x);
        }
    }
}

/// [`col2im`] of one image, output row by output row: any stride and padding.
fn col2im_rows(g: &Geo, k: Chunk, col: &[f32], ld: usize, x: &mut [f32]) {
    let px = k.pixels(g);
    for c in 0..g.c {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &col[((c * g.kh + i) * g.kw + j) * ld..][..px];
                let (lo, hi) = g.valid_cols(j);
                if lo >= hi {
                    continue;
                }
                for r in k.r0..k.r1 {
                    let Some(ih) = g.in_row(r, i) else {
                        continue;
                    };
                    let dst = &mut x[(c * g.h + ih) * g.w..(c * g.h + ih + 1) * g.w];
                    let base = (r - k.r0) * g.ow;
                    let src = &row[base + lo..base + hi];
                    let first = lo * g.stride + j - g.pad;
                    if g.stride == 1 {
                        for (d, s) in dst[first..first + (hi - lo)].iter_mut().zip(src) {
                            *d += s;
                        }
                    } else {
                        for (q, s) in src.iter().enumerate() {
                            dst[first + q * g.stride] += s;
                        }
                    }
                }
            }
        }
    }
}

/// [`col2im`] of one image for a stride-1 same-width convolution, the adjoint of
/// [`im2col_same_width`]: the entries of each tap's valid run that stand for the wrapped border
/// are zeroed in `col`, then the run is added to the shifted plane in one pass. Each input
/// element still receives each tap's term once, in the same order, so the sums are the
/// per-row loop's (an all-negative-zero sum aside, which comes out +0).
fn col2im_same_width(g: &Geo, k: Chunk, col: &mut [f32], ld: usize, x: &mut [f32]) {
    let (w, px) = (g.w, k.pixels(g));
    for c in 0..g.c {
        let plane = &mut x[c * g.h * w..(c + 1) * g.h * w];
        for i in 0..g.kh {
            let ra = k.r0.max(g.pad.saturating_sub(i));
            let rb = k.r1.min((g.h + g.pad).saturating_sub(i));
            for j in 0..g.kw {
                let (lo, hi) = g.valid_cols(j);
                if ra >= rb || lo >= hi {
                    continue;
                }
                let row = &mut col[((c * g.kh + i) * g.kw + j) * ld..][..px];
                let start = (ra - k.r0) * w + lo;
                let end = (rb - 1 - k.r0) * w + hi;
                let from = (ra + i - g.pad) * w + lo + j - g.pad;
                for r in ra + 1..rb {
                    row[(r - k.r0) * w..][..lo].fill(0.0);
                }
                for r in ra..rb - 1 {
                    row[(r - k.r0) * w + hi..(r - k.r0 + 1) * w].fill(0.0);
                }
                for (d, s) in plane[from..from + (end - start)]
                    .iter_mut()
                    .zip(&row[start..end])
                {
                    *d += s;
                }
            }
        }
    }
}

/// `blk[o][n * pixels + p] = ys[n][o][r0 * ow + p]` for the `nbj` images of `ys` and the
/// pixels of chunk `k`.
pub(super) fn gather_out(g: &Geo, k: Chunk, ys: &[f32], nbj: usize, blk: &mut [f32]) {
    let px = k.pixels(g);
    let ld = nbj * px;
    for n in 0..nbj {
        for o in 0..g.o {
            blk[o * ld + n * px..][..px]
                .copy_from_slice(&ys[(n * g.o + o) * g.ohw + k.r0 * g.ow..][..px]);
        }
    }
}

/// The inverse of [`gather_out`]: `ys[n][o][r0 * ow + p] = blk[o][n * pixels + p]`.
pub(super) fn scatter_out(g: &Geo, k: Chunk, blk: &[f32], nbj: usize, ys: &mut [f32]) {
    let px = k.pixels(g);
    let ld = nbj * px;
    for n in 0..nbj {
        for o in 0..g.o {
            ys[(n * g.o + o) * g.ohw + k.r0 * g.ow..][..px]
                .copy_from_slice(&blk[o * ld + n * px..][..px]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::rand_vec;

    /// The same-width lowering and its adjoint equal the row-by-row ones bit for bit, for
    /// kernels wider and taller than the map, non-square maps and chunks of rows.
    #[test]
    fn same_width_lowering_is_the_row_by_row_lowering() {
        let mut cases = 0;
        for pad in 0..4 {
            for kh in [1, 3, 2 * pad + 1] {
                for (h, w) in [(1, 1), (2, 3), (4, 4), (7, 5), (16, 16)] {
                    let shape = Conv2dShape {
                        batch: 1,
                        in_channels: 2,
                        in_height: h,
                        in_width: w,
                        out_channels: 1,
                        kernel_h: kh,
                        kernel_w: 2 * pad + 1,
                        stride: 1,
                        padding: pad,
                    };
                    if h + 2 * pad < kh {
                        continue;
                    }
                    let g = Geo::new(&shape, 1);
                    assert_eq!(g.ow, g.w);
                    let x = rand_vec(g.in_image(), (pad * 100 + h * 10 + w) as u32, 1.0);
                    for (r0, r1) in [(0, g.oh), (0, g.oh / 2), (g.oh / 2, g.oh), (1, g.oh)] {
                        if r0 >= r1 {
                            continue;
                        }
                        let k = Chunk { r0, r1 };
                        let len = g.ckk * k.pixels(&g);
                        let ld = k.pixels(&g);
                        let (mut fast, mut rows) = (vec![9.0; len], vec![7.0; len]);
                        im2col_same_width(&g, k, &x, &mut fast, ld);
                        im2col_rows(&g, k, &x, &mut rows, ld);
                        assert_eq!(
                            fast, rows,
                            "im2col pad {pad} kh {kh} {h}x{w} rows {r0}..{r1}"
                        );

                        let col = rand_vec(len, 7 + cases, 1.0);
                        let (mut into_fast, mut into_rows) = (x.clone(), x.clone());
                        col2im_same_width(&g, k, &mut col.clone(), ld, &mut into_fast);
                        col2im_rows(&g, k, &col, ld, &mut into_rows);
                        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&into_fast),
                            bits(&into_rows),
                            "col2im pad {pad} kh {kh} {h}x{w} rows {r0}..{r1}"
                        );
                        cases += 1;
                    }
                }
            }
        }
        assert!(cases > 100, "{cases}");
    }
}
