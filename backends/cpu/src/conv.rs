//! 2-D convolution (cross-correlation, NCHW, weights `[out, in, kh, kw]`), forward,
//! backward-data and backward-filter side by side, all lowered onto the packed GEMM.
//!
//! Images are processed in *blocks* of `nb` consecutive images whose column matrices sit side by
//! side, so that one GEMM covers `nb * OH*OW` output pixels: with small feature maps (a 4x4 or
//! 7x7 map has 16 or 49 pixels) a GEMM per image would repack the whole weight matrix for a
//! handful of columns, and backward-filter would read and write the whole gradient for a depth
//! of 16. For a block `B` of images, with `P = OH*OW`:
//!
//! - forward: `Y_B [O, nb*P] = W [O, C*kh*kw] x col_B`, `col_B = [im2col(x_n) for n in B]`,
//!   then each image's `[O, P]` slice is copied out (with one image, the GEMM writes `y_n`);
//! - backward-data: `col_B = W^T G_B` with `G_B [O, nb*P]` the gathered `grad_out_n`, then
//!   `grad_in_n = col2im(col_B's slice n)`;
//! - backward-filter: `grad_W^T [C*kh*kw, O] += col_B G_B^T` (depth `nb * P`).
//!
//! A 1x1 stride-1 unpadded convolution with one image per block uses `x_n` itself as `col_n`;
//! a single image with a large column matrix is handled in chunks of output rows (`col` and the
//! GEMMs restricted to those pixels, [`CHUNK_ABOVE`]).
//! The images are split into groups, one per thread, each with its own buffers (and, for
//! backward-filter, its own partial weight gradient, summed at the end); with fewer images than
//! threads, blocks run one after another and each GEMM uses every thread. Backward-filter uses
//! deeper blocks than the other two passes ([`FILTER_COLS`], [`BLOCK_COLS`]). [`workspace_len`]
//! covers all three passes: `groups * (col + blk + O*C*kh*kw)` with `groups = min(threads,
//! batch)`, `nb` the larger blocking, `col = C*kh*kw * nb*P` (0 for a 1x1 stride-1 unpadded
//! convolution with `nb = 1`) and `blk = O * nb*P` (0 when `nb = 1`); each pass checks the
//! workspace holds it.

use core::ops::Range;

use dscl_core::desc::Conv2dShape;
use dscl_core::error::check_len;
use dscl_core::Result;

use crate::gemm::{matmul, Operand};
use crate::parallel::{unit, Par, Rows, ELEMENT_GRAIN};
use crate::CpuBackend;
use dscl_core::backend::ConvOps;

/// Output pixels one forward or backward-data GEMM should cover at least: images are blocked
/// until their columns reach this many (or the thread's images run out). Small, so that the
/// column block stays in cache: measured on ResNet layers, blocking pays only for maps of a few
/// pixels (4x4: forward 1.05x, backward-data 1.5x faster), and larger blocks lose.
const BLOCK_COLS: usize = 64;
/// Column-matrix elements above which a single image's columns are built and multiplied in
/// chunks of output rows, and the chunk size (1 MiB: it stays in L2 between im2col and GEMM
/// packing). Measured: the 7x7 stride-2 stem 1.15-1.35x faster, 56x56 3x3 forward 1.1x; at
/// 32x32 x 576 (below the threshold) chunking was neutral to 5% slower.
const CHUNK_ABOVE: usize = 1 << 20;
const COL_CHUNK: usize = 1 << 18;
/// The same for backward-filter, whose GEMM depth is the block's pixel count: each GEMM reads
/// and writes the whole partial gradient, so deeper blocks pay (4x4 maps: 1.6x).
const FILTER_COLS: usize = 128;

/// Sizes derived from a (checked) shape and the thread count.
struct Geo {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
    /// Output pixels per image, `oh * ow`.
    ohw: usize,
    /// GEMM depth `c * kh * kw`.
    ckk: usize,
    /// 1x1, stride 1, no padding: the input image is its own column matrix.
    direct: bool,
    /// Output rows per column chunk of a single-image block ([`CHUNK_ABOVE`]).
    chunk_rows: usize,
    /// Image groups (one per thread, at most one per image) and images per group.
    groups: usize,
    per: usize,
    /// Images per block of the forward and backward-data passes, and of backward-filter.
    nb: usize,
    nb_filter: usize,
    /// Workspace elements of a group: column buffer and gathered-output buffer (sized for the
    /// larger of the two blockings), then backward-filter's partial gradient.
    col: usize,
    blk: usize,
    partial: usize,
}

impl Geo {
    fn new(s: &Conv2dShape, threads: usize) -> Geo {
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

    fn in_image(&self) -> usize {
        self.c * self.h * self.w
    }

    fn out_image(&self) -> usize {
        self.o * self.ohw
    }

    fn per_group(&self) -> usize {
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
struct Chunk {
    r0: usize,
    r1: usize,
}

impl Chunk {
    /// The whole map.
    fn full(g: &Geo) -> Chunk {
        Chunk { r0: 0, r1: g.oh }
    }

    /// Pixels of one image in the chunk.
    fn pixels(&self, g: &Geo) -> usize {
        (self.r1 - self.r0) * g.ow
    }
}

impl Geo {
    /// Calls `f` for each chunk of `chunk_rows` output rows.
    fn for_chunks(&self, mut f: impl FnMut(Chunk)) {
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
fn im2col(g: &Geo, k: Chunk, xs: &[f32], nbj: usize, col: &mut [f32]) {
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
fn col2im(g: &Geo, k: Chunk, col: &[f32], nbj: usize, xs: &mut [f32]) {
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
fn gather_out(g: &Geo, k: Chunk, ys: &[f32], nbj: usize, blk: &mut [f32]) {
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
fn scatter_out(g: &Geo, k: Chunk, blk: &[f32], nbj: usize, ys: &mut [f32]) {
    let px = k.pixels(g);
    let ld = nbj * px;
    for n in 0..nbj {
        for o in 0..g.o {
            ys[(n * g.o + o) * g.ohw + k.r0 * g.ow..][..px]
                .copy_from_slice(&blk[o * ld + n * px..][..px]);
        }
    }
}

/// Checks that the workspace holds what [`workspace_len`] reports (every pass demands the full
/// length, so a workspace planned for one pass serves all three), then returns the geometry.
fn plan(par: &Par, shape: &Conv2dShape, ws_len: usize) -> Result<Geo> {
    check_len(
        "conv2d workspace",
        ws_len,
        workspace_len(par.threads, shape),
    )?;
    Ok(Geo::new(shape, par.threads))
}

/// Workspace elements the three passes need with `threads` threads.
pub(crate) fn workspace_len(threads: usize, shape: &Conv2dShape) -> usize {
    if shape.check_shape().is_err() {
        return 0;
    }
    let g = Geo::new(shape, threads);
    g.groups.saturating_mul(g.per_group())
}

/// Runs `body(threads, images, images_out, group_workspace)` over the groups of images, where
/// `images_out` is the slice of `out` (items of `out_image` elements) for the group's `images`.
/// With one group, runs on the calling thread inside the pool (so GEMM can use every thread);
/// `body` receives the thread count its GEMMs may use.
fn for_groups<F>(
    par: &Par,
    g: &Geo,
    batch: usize,
    out: &mut [f32],
    out_image: usize,
    ws: &mut [f32],
    body: F,
) where
    F: Fn(usize, Range<usize>, &mut [f32], &mut [f32]) + Sync,
{
    let (per, per_group) = (g.per, g.per_group());
    if g.groups <= 1 {
        let threads = par.threads;
        par.install(|| body(threads, 0..batch, out, &mut ws[..per_group]));
        return;
    }
    par.run(
        g.groups,
        1,
        (
            Rows(out, per * out_image),
            Rows(&mut ws[..g.groups * per_group], per_group),
        ),
        |range, (Rows(o, _), Rows(w, _))| {
            for (k, gi) in range.enumerate() {
                let o_end = ((k + 1) * per * out_image).min(o.len());
                let oc = &mut o[k * per * out_image..o_end];
                let wc = &mut w[k * per_group..(k + 1) * per_group];
                body(1, gi * per..((gi + 1) * per).min(batch), oc, wc);
            }
        },
        unit,
    );
}

/// Calls `f(first_image, block_len)` for the blocks of `images`, `nb` images each (the last may
/// be shorter).
fn for_blocks(nb: usize, images: Range<usize>, mut f: impl FnMut(usize, usize)) {
    let mut n = images.start;
    while n < images.end {
        let nbj = nb.min(images.end - n);
        f(n, nbj);
        n += nbj;
    }
}

pub(crate) fn forward(
    par: &Par,
    shape: &Conv2dShape,
    input: &[f32],
    weight: &[f32],
    output: &mut [f32],
    workspace: &mut [f32],
) -> Result<()> {
    shape.check(input.len(), weight.len(), output.len())?;
    let out_len = shape.output_len();
    if out_len == 0 {
        return Ok(());
    }
    let g = plan(par, shape, workspace.len())?;
    let (in_img, out_img) = (g.in_image(), g.out_image());
    let w = &weight[..g.o * g.ckk];
    for_groups(
        par,
        &g,
        shape.batch,
        &mut output[..out_len],
        out_img,
        workspace,
        |threads, images, out, ws| {
            let (col, rest) = ws.split_at_mut(g.col);
            let blk = &mut rest[..g.blk];
            let first = images.start;
            for_blocks(g.nb, images, |n, nbj| {
                let xs = &input[n * in_img..(n + nbj) * in_img];
                let ys = &mut out[(n - first) * out_img..(n - first + nbj) * out_img];
                g.for_chunks(|k| {
                    let (cols, depth) = (nbj * k.pixels(&g), g.ckk);
                    let wt = Operand {
                        data: w,
                        ld: g.ckk,
                        trans: false,
                    };
                    let b = if g.direct && nbj == 1 {
                        xs
                    } else {
                        im2col(&g, k, xs, nbj, col);
                        &col[..depth * cols]
                    };
                    let b = Operand {
                        data: b,
                        ld: cols,
                        trans: false,
                    };
                    let dims = [g.o, cols, depth];
                    if nbj == 1 {
                        let y = &mut ys[k.r0 * g.ow..];
                        matmul(threads, dims, 1.0, 0.0, wt, b, y, g.ohw);
                    } else {
                        matmul(threads, dims, 1.0, 0.0, wt, b, blk, cols);
                        scatter_out(&g, k, blk, nbj, ys);
                    }
                });
            });
        },
    );
    Ok(())
}

pub(crate) fn backward_data(
    par: &Par,
    shape: &Conv2dShape,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
    workspace: &mut [f32],
) -> Result<()> {
    shape.check(grad_input.len(), weight.len(), grad_output.len())?;
    let in_len = shape.input_len();
    if in_len == 0 {
        return Ok(());
    }
    let g = plan(par, shape, workspace.len())?;
    let (in_img, out_img) = (g.in_image(), g.out_image());
    let w = &weight[..g.o * g.ckk];
    for_groups(
        par,
        &g,
        shape.batch,
        &mut grad_input[..in_len],
        in_img,
        workspace,
        |threads, images, gin, ws| {
            let (col, rest) = ws.split_at_mut(g.col);
            let blk = &mut rest[..g.blk];
            let first = images.start;
            for_blocks(g.nb, images, |n, nbj| {
                let gys = &grad_output[n * out_img..(n + nbj) * out_img];
                let gx = &mut gin[(n - first) * in_img..(n - first + nbj) * in_img];
                if !g.direct {
                    gx.fill(0.0);
                }
                g.for_chunks(|k| {
                    let (cols, depth) = (nbj * k.pixels(&g), g.ckk);
                    // op(A) = W^T: [ckk, O] from W stored [O, ckk].
                    let wt = Operand {
                        data: w,
                        ld: g.ckk,
                        trans: true,
                    };
                    let gy = if nbj == 1 {
                        Operand {
                            data: &gys[k.r0 * g.ow..],
                            ld: g.ohw,
                            trans: false,
                        }
                    } else {
                        gather_out(&g, k, gys, nbj, blk);
                        Operand {
                            data: &blk[..g.o * cols],
                            ld: cols,
                            trans: false,
                        }
                    };
                    let dims = [depth, cols, g.o];
                    if g.direct && nbj == 1 {
                        matmul(threads, dims, 1.0, 0.0, wt, gy, gx, cols);
                    } else {
                        matmul(threads, dims, 1.0, 0.0, wt, gy, col, cols);
                        col2im(&g, k, col, nbj, gx);
                    }
                });
            });
        },
    );
    Ok(())
}

pub(crate) fn backward_filter(
    par: &Par,
    shape: &Conv2dShape,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
    workspace: &mut [f32],
) -> Result<()> {
    shape.check(input.len(), grad_weight.len(), grad_output.len())?;
    let w_len = shape.weight_len();
    if w_len == 0 || shape.batch == 0 {
        return Ok(());
    }
    let g = plan(par, shape, workspace.len())?;
    if g.ohw == 0 {
        return Ok(());
    }
    let (in_img, out_img) = (g.in_image(), g.out_image());
    // Each group of images sums `grad_W^T [ckk, O] = sum_B col_B [ckk, nb*P] x G_B^T` into its
    // own partial (the gemm crate is several times faster producing this layout than
    // `grad_W [O, ckk]` directly when O is small), then the partials are added, transposed.
    for_groups(
        par,
        &g,
        shape.batch,
        &mut [],
        0,
        workspace,
        |threads, images, _, ws| {
            let (col, rest) = ws.split_at_mut(g.col);
            let (blk, partial) = rest.split_at_mut(g.blk);
            let first = images.start;
            for_blocks(g.nb_filter, images, |n, nbj| {
                let xs = &input[n * in_img..(n + nbj) * in_img];
                let gys = &grad_output[n * out_img..(n + nbj) * out_img];
                let mut chunk = |k: Chunk| {
                    let cols = nbj * k.pixels(&g);
                    let a = if g.direct && nbj == 1 {
                        xs
                    } else {
                        im2col(&g, k, xs, nbj, col);
                        &col[..g.ckk * cols]
                    };
                    let a = Operand {
                        data: a,
                        ld: cols,
                        trans: false,
                    };
                    let gy = if nbj == 1 {
                        Operand {
                            data: &gys[k.r0 * g.ow..],
                            ld: g.ohw,
                            trans: true,
                        }
                    } else {
                        gather_out(&g, k, gys, nbj, blk);
                        Operand {
                            data: &blk[..g.o * cols],
                            ld: cols,
                            trans: true,
                        }
                    };
                    let beta = if n == first && k.r0 == 0 { 0.0 } else { 1.0 };
                    matmul(threads, [g.ckk, g.o, cols], 1.0, beta, a, gy, partial, g.o);
                };
                if nbj == 1 {
                    g.for_chunks(chunk);
                } else {
                    chunk(Chunk::full(&g));
                }
            });
        },
    );
    // grad_W[o][i] += sum_g partial_g[i][o], threaded over output channels, in TILE x TILE
    // blocks transposed on the stack (walking grad_W by columns was 16% of the pass at
    // O = 2048: its rows are a multiple of 4 KiB apart and fight over the same cache sets).
    const TILE: usize = 16;
    let (n_groups, per_group, skip) = (g.groups, g.per_group(), g.col + g.blk);
    let ws = &*workspace;
    let (o_count, ckk) = (g.o, g.ckk);
    par.run(
        o_count,
        (ELEMENT_GRAIN / (ckk * n_groups)).max(TILE),
        Rows(&mut grad_weight[..w_len], ckk),
        |range, Rows(gw, _)| {
            let mut o0 = range.start;
            while o0 < range.end {
                let o1 = (o0 + TILE).min(range.end);
                let rows = &mut gw[(o0 - range.start) * ckk..(o1 - range.start) * ckk];
                let mut i0 = 0;
                while i0 < ckk {
                    let i1 = (i0 + TILE).min(ckk);
                    // The TILE x TILE block, summed over groups and transposed on the stack.
                    let mut t = [[0.0f32; TILE]; TILE];
                    for gi in 0..n_groups {
                        let partial = &ws[gi * per_group + skip..(gi + 1) * per_group];
                        for (ii, i) in (i0..i1).enumerate() {
                            let src = &partial[i * o_count + o0..i * o_count + o1];
                            for (row, v) in t.iter_mut().zip(src) {
                                row[ii] += v;
                            }
                        }
                    }
                    for (row, tr) in rows.chunks_mut(ckk).zip(&t) {
                        for (d, v) in row[i0..i1].iter_mut().zip(tr) {
                            *d += v;
                        }
                    }
                    i0 = i1;
                }
                o0 = o1;
            }
        },
        unit,
    );
    Ok(())
}

impl<'a> ConvOps for CpuBackend<'a> {
    fn conv2d_workspace_len(&self, shape: &Conv2dShape) -> usize {
        workspace_len(self.threads, shape)
    }

    fn conv2d_forward(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        weight: &Self::Buffer,
        output: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        forward(&self.par(), shape, input, weight, output, workspace)
    }

    fn conv2d_backward_data(
        &self,
        shape: &Conv2dShape,
        grad_output: &Self::Buffer,
        weight: &Self::Buffer,
        grad_input: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        backward_data(
            &self.par(),
            shape,
            grad_output,
            weight,
            grad_input,
            workspace,
        )
    }

    fn conv2d_backward_filter(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        grad_output: &Self::Buffer,
        grad_weight: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        backward_filter(
            &self.par(),
            shape,
            input,
            grad_output,
            grad_weight,
            workspace,
        )
    }
}
