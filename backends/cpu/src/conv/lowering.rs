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
        for c in 0..g.c {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let row = &mut col[((c * g.kh + i) * g.kw + j) * ld + n * px..][..px];
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
}

/// The adjoint of [`im2col`] for chunk `k`: `x_n[c][r * stride + i - pad][q * stride + j - pad]
/// += col[(c, i, j)][n * pixels + (r - r0, q)]`; a 1x1 stride-1 unpadded convolution copies
/// instead (otherwise the caller zeroes `xs` before the first chunk).
pub(super) fn col2im(g: &Geo, k: Chunk, col: &[f32], nbj: usize, xs: &mut [f32]) {
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
        for c in 0..g.c {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let row = &col[((c * g.kh + i) * g.kw + j) * ld + n * px..][..px];
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
