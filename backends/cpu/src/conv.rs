//! 2-D convolution (cross-correlation, NCHW, weights `[out, in, kh, kw]`), forward,
//! backward-data and backward-filter side by side, all lowered onto the packed GEMM:
//!
//! - forward: `out_n [O, OH*OW] = W [O, C*kh*kw] x col_n`, with `col_n = im2col(x_n)`
//!   (a 1x1 stride-1 unpadded convolution uses `x_n` itself as `col_n`);
//! - backward-data: `col_n = W^T grad_out_n`, then `grad_in_n = col2im(col_n)`;
//! - backward-filter: `grad_W += grad_out_n col_n^T`, accumulated over images.
//!
//! Images are split into groups, one per thread, each with its own column buffer (and, for
//! backward-filter, its own partial weight gradient, summed at the end); with fewer images than
//! threads, images run one after another and each GEMM uses every thread.
//! [`workspace_len`] covers all three passes for the backend's thread count:
//! `groups * (C*kh*kw*OH*OW + O*C*kh*kw)` with `groups = min(threads, batch)` (the column term
//! is 0 for a 1x1 stride-1 unpadded convolution); each pass checks the workspace holds it.

use dscl_core::desc::Conv2dShape;
use dscl_core::error::check_len;
use dscl_core::Result;

use crate::gemm::{matmul, Operand};
use crate::parallel::{unit, Par, Rows, ELEMENT_GRAIN};

/// Sizes derived from a (checked) shape.
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
    /// Elements of one image's columns (0 when the input is used directly).
    col: usize,
    /// 1x1, stride 1, no padding: the input image is its own column matrix.
    direct: bool,
}

impl Geo {
    fn new(s: &Conv2dShape) -> Geo {
        let (oh, ow) = (s.out_height(), s.out_width());
        let ckk = s
            .in_channels
            .saturating_mul(s.kernel_h)
            .saturating_mul(s.kernel_w);
        let direct = s.kernel_h == 1 && s.kernel_w == 1 && s.stride == 1 && s.padding == 0;
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
            ohw: oh.saturating_mul(ow),
            ckk,
            col: if direct {
                0
            } else {
                ckk.saturating_mul(oh).saturating_mul(ow)
            },
            direct,
        }
    }

    fn in_image(&self) -> usize {
        self.c * self.h * self.w
    }

    fn out_image(&self) -> usize {
        self.o * self.ohw
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

/// `col[(c, i, j)][(r, q)] = x[c][r * stride + i - pad][q * stride + j - pad]` (0 outside).
fn im2col(g: &Geo, x: &[f32], col: &mut [f32]) {
    for c in 0..g.c {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut col[((c * g.kh + i) * g.kw + j) * g.ohw..][..g.ohw];
                let (lo, hi) = g.valid_cols(j);
                for r in 0..g.oh {
                    let dst = &mut row[r * g.ow..(r + 1) * g.ow];
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

/// `x[c][r * stride + i - pad][q * stride + j - pad] += col[(c, i, j)][(r, q)]` (x zeroed
/// first).
fn col2im(g: &Geo, col: &[f32], x: &mut [f32]) {
    x.fill(0.0);
    for c in 0..g.c {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &col[((c * g.kh + i) * g.kw + j) * g.ohw..][..g.ohw];
                let (lo, hi) = g.valid_cols(j);
                if lo >= hi {
                    continue;
                }
                for r in 0..g.oh {
                    let Some(ih) = g.in_row(r, i) else {
                        continue;
                    };
                    let dst = &mut x[(c * g.h + ih) * g.w..(c * g.h + ih + 1) * g.w];
                    let src = &row[r * g.ow + lo..r * g.ow + hi];
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

/// Image groups that run in parallel (one per thread, at most one per image), after checking
/// that the workspace holds what [`workspace_len`] reports: every pass demands the full length,
/// so a workspace planned for one pass serves all three.
fn groups(par: &Par, shape: &Conv2dShape, ws_len: usize) -> Result<usize> {
    check_len(
        "conv2d workspace",
        ws_len,
        workspace_len(par.threads, shape),
    )?;
    Ok(par.threads.min(shape.batch).max(1))
}

/// Workspace elements the three passes need with `threads` threads.
pub(crate) fn workspace_len(threads: usize, shape: &Conv2dShape) -> usize {
    if shape.check_shape().is_err() {
        return 0;
    }
    let g = Geo::new(shape);
    // Backward-filter needs the most: a column buffer and a partial gradient per group.
    let per_group = g.col.saturating_add(g.o.saturating_mul(g.ckk));
    threads.min(shape.batch).max(1).saturating_mul(per_group)
}

/// Runs `body(first_image, images_out, group_workspace)` over groups of images, where
/// `images_out` is the slice of `out` (items of `out_image` elements) for the group's images.
/// With one group, runs on the calling thread inside the pool (so GEMM can use every thread);
/// `body` receives the thread count its GEMMs may use.
#[allow(clippy::too_many_arguments)]
fn for_groups<F>(
    par: &Par,
    batch: usize,
    n_groups: usize,
    out: &mut [f32],
    out_image: usize,
    ws: &mut [f32],
    per_group: usize,
    body: F,
) where
    F: Fn(usize, usize, &mut [f32], &mut [f32]) + Sync,
{
    let per = batch.div_ceil(n_groups.max(1)).max(1);
    let n_groups = batch.div_ceil(per);
    if n_groups <= 1 {
        let threads = par.threads;
        par.install(|| body(threads, 0, out, &mut ws[..per_group]));
        return;
    }
    par.run(
        n_groups,
        1,
        (
            Rows(out, per * out_image),
            Rows(&mut ws[..n_groups * per_group], per_group),
        ),
        |range, (Rows(o, _), Rows(w, _))| {
            for (k, gi) in range.enumerate() {
                let o_end = ((k + 1) * per * out_image).min(o.len());
                let oc = &mut o[k * per * out_image..o_end];
                let wc = &mut w[k * per_group..(k + 1) * per_group];
                body(1, gi * per, oc, wc);
            }
        },
        unit,
    );
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
    let g = Geo::new(shape);
    let out_len = shape.output_len();
    if out_len == 0 {
        return Ok(());
    }
    let n_groups = groups(par, shape, workspace.len())?;
    let (in_img, out_img) = (g.in_image(), g.out_image());
    let wt = Operand {
        data: &weight[..g.o * g.ckk],
        ld: g.ckk,
        trans: false,
    };
    for_groups(
        par,
        shape.batch,
        n_groups,
        &mut output[..out_len],
        out_img,
        workspace,
        g.col,
        |threads, first, out, col| {
            for (j, o) in out.chunks_mut(out_img).enumerate() {
                let n = first + j;
                let x = &input[n * in_img..(n + 1) * in_img];
                let cols = if g.direct {
                    x
                } else {
                    im2col(&g, x, col);
                    &col[..]
                };
                let b = Operand {
                    data: cols,
                    ld: g.ohw,
                    trans: false,
                };
                matmul(threads, [g.o, g.ohw, g.ckk], 1.0, 0.0, wt, b, o, g.ohw);
            }
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
    let g = Geo::new(shape);
    let in_len = shape.input_len();
    if in_len == 0 {
        return Ok(());
    }
    let n_groups = groups(par, shape, workspace.len())?;
    let (in_img, out_img) = (g.in_image(), g.out_image());
    // op(A) = W^T: [ckk, O] from W stored [O, ckk].
    let wt = Operand {
        data: &weight[..g.o * g.ckk],
        ld: g.ckk,
        trans: true,
    };
    for_groups(
        par,
        shape.batch,
        n_groups,
        &mut grad_input[..in_len],
        in_img,
        workspace,
        g.col,
        |threads, first, gin, col| {
            for (j, gi) in gin.chunks_mut(in_img).enumerate() {
                let n = first + j;
                let gy = Operand {
                    data: &grad_output[n * out_img..(n + 1) * out_img],
                    ld: g.ohw,
                    trans: false,
                };
                if g.direct {
                    matmul(threads, [g.ckk, g.ohw, g.o], 1.0, 0.0, wt, gy, gi, g.ohw);
                } else {
                    matmul(threads, [g.ckk, g.ohw, g.o], 1.0, 0.0, wt, gy, col, g.ohw);
                    col2im(&g, col, gi);
                }
            }
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
    let g = Geo::new(shape);
    let w_len = shape.weight_len();
    if w_len == 0 || shape.batch == 0 || g.ohw == 0 {
        return Ok(());
    }
    let (in_img, out_img) = (g.in_image(), g.out_image());
    // Each group of images sums `grad_W^T [ckk, O] = sum_n col_n [ckk, ohw] x grad_out_n^T`
    // into its own partial (the gemm crate is several times faster producing this layout than
    // `grad_W [O, ckk]` directly when O is small), then the partials are added, transposed.
    let per_group = g.col + w_len;
    let n_groups = groups(par, shape, workspace.len())?;
    let per = shape.batch.div_ceil(n_groups);
    let n_groups = shape.batch.div_ceil(per);
    let ws = &mut workspace[..n_groups * per_group];
    let sum_images = |threads: usize, gi: usize, w: &mut [f32]| {
        let (col, partial) = w.split_at_mut(g.col);
        let images = gi * per..((gi + 1) * per).min(shape.batch);
        for (j, n) in images.enumerate() {
            let x = &input[n * in_img..(n + 1) * in_img];
            let cols = if g.direct {
                x
            } else {
                im2col(&g, x, col);
                &col[..]
            };
            let a = Operand {
                data: cols,
                ld: g.ohw,
                trans: false,
            };
            let gy = Operand {
                data: &grad_output[n * out_img..(n + 1) * out_img],
                ld: g.ohw,
                trans: true,
            };
            let beta = if j == 0 { 0.0 } else { 1.0 };
            matmul(threads, [g.ckk, g.o, g.ohw], 1.0, beta, a, gy, partial, g.o);
        }
    };
    if n_groups == 1 {
        let threads = par.threads;
        par.install(|| sum_images(threads, 0, &mut ws[..]));
    } else {
        par.run(
            n_groups,
            1,
            Rows(&mut ws[..], per_group),
            |range, Rows(w, _)| {
                for (k, gi) in range.enumerate() {
                    sum_images(1, gi, &mut w[k * per_group..(k + 1) * per_group]);
                }
            },
            unit,
        );
    }
    // grad_W[o][i] += sum_g partial_g[i][o], threaded over output channels.
    let ws = &*ws;
    let (o_count, ckk) = (g.o, g.ckk);
    par.run(
        o_count,
        (ELEMENT_GRAIN / (ckk * n_groups)).max(1),
        Rows(&mut grad_weight[..w_len], ckk),
        |range, Rows(gw, _)| {
            for (q, o) in range.enumerate() {
                let row = &mut gw[q * ckk..(q + 1) * ckk];
                for gi in 0..n_groups {
                    let partial = &ws[gi * per_group + g.col..(gi + 1) * per_group];
                    for (i, d) in row.iter_mut().enumerate() {
                        *d += partial[i * o_count + o];
                    }
                }
            }
        },
        unit,
    );
    Ok(())
}
