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
//!
//! [`BLOCK_COLS`]: lowering::BLOCK_COLS
//! [`CHUNK_ABOVE`]: lowering::CHUNK_ABOVE
//! [`FILTER_COLS`]: lowering::FILTER_COLS

use core::ops::Range;

use dscl_core::backend::ConvOps;
use dscl_core::desc::Conv2dShape;
use dscl_core::error::check_len;
use dscl_core::Result;

use crate::gemm::{matmul, Operand};
use crate::parallel::{unit, Par, Rows, ELEMENT_GRAIN};
use crate::CpuBackend;

mod lowering;

use lowering::{col2im, gather_out, im2col, scatter_out, Chunk, Geo};

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
    Rows(out, out_image): Rows<'_, f32>,
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

/// Images `n..n + len` of a group, `first` when the block opens its group.
#[derive(Clone, Copy)]
struct Block {
    n: usize,
    len: usize,
    first: bool,
}

impl Block {
    /// The block's images in `x`, a batch of images of `image` elements each.
    fn images<'a>(&self, x: &'a [f32], image: usize) -> &'a [f32] {
        &x[self.n * image..(self.n + self.len) * image]
    }
}

/// What a group of images works with: the threads its GEMMs may use and its workspace, split in
/// the order [`Geo::per_group`] sizes it (backward-filter's final sum finds the partials past
/// `col` and `blk` by the same order).
struct Group<'w> {
    threads: usize,
    /// Column matrix `[ckk, nb*P]`.
    col: &'w mut [f32],
    /// A block's output-side matrix `[O, nb*P]`, gathered or to be scattered.
    blk: &'w mut [f32],
    /// Backward-filter's partial `grad_W^T [ckk, O]`.
    partial: &'w mut [f32],
}

/// Runs `block(b, out_b, group)` for the blocks of `nb` images (the last of a group may be
/// shorter) of every group (see [`for_groups`]), one after another within a group, where `out_b`
/// is `out`'s slice for the block's images.
fn for_blocks<F>(
    par: &Par,
    g: &Geo,
    batch: usize,
    nb: usize,
    out: Rows<'_, f32>,
    ws: &mut [f32],
    block: F,
) where
    F: Fn(Block, &mut [f32], &mut Group<'_>) + Sync,
{
    let out_image = out.1;
    for_groups(par, g, batch, out, ws, |threads, images, out, ws| {
        let (col, rest) = ws.split_at_mut(g.col);
        let (blk, partial) = rest.split_at_mut(g.blk);
        let mut group = Group {
            threads,
            col,
            blk,
            partial,
        };
        let mut n = images.start;
        while n < images.end {
            let len = nb.min(images.end - n);
            let q = n - images.start;
            let out_b = &mut out[q * out_image..(q + len) * out_image];
            let first = n == images.start;
            block(Block { n, len, first }, out_b, &mut group);
            n += len;
        }
    });
}

/// Forward and backward-data, which share their frame: each writes one whole tensor from the
/// other, block by block ([`Geo::nb`] images).
#[derive(Clone, Copy)]
enum DataPass {
    /// Writes the output.
    Forward,
    /// Writes the input's gradient (the adjoint of forward).
    BackwardData,
}

impl DataPass {
    /// Unless the tensor the pass writes (`dst`) is empty, checks the workspace and calls
    /// `block(g, b, dst_b, group)` for the blocks, `dst_b` being the block's images of `dst`.
    fn run<F>(
        self,
        par: &Par,
        shape: &Conv2dShape,
        dst: &mut [f32],
        ws: &mut [f32],
        block: F,
    ) -> Result<()>
    where
        F: Fn(&Geo, Block, &mut [f32], &mut Group<'_>) + Sync,
    {
        let (len, image): (_, fn(&Geo) -> usize) = match self {
            DataPass::Forward => (shape.output_len(), Geo::out_image),
            DataPass::BackwardData => (shape.input_len(), Geo::in_image),
        };
        if len == 0 {
            return Ok(());
        }
        let g = plan(par, shape, ws.len())?;
        let dst = Rows(&mut dst[..len], image(&g));
        for_blocks(par, &g, shape.batch, g.nb, dst, ws, |b, dst_b, group| {
            block(&g, b, dst_b, group)
        });
        Ok(())
    }
}

/// `W [O, ckk]` as a GEMM operand, `W^T` when `trans`.
fn weights<'w>(g: &Geo, weight: &'w [f32], trans: bool) -> Operand<'w> {
    Operand {
        data: &weight[..g.o * g.ckk],
        ld: g.ckk,
        trans,
    }
}

/// The column matrix `[ckk, cols]` of chunk `k` of the images `xs` (`nbj` of them): a direct
/// convolution's single image is its own, otherwise it is built in `col`.
#[inline(always)]
fn columns<'a>(g: &Geo, k: Chunk, xs: &'a [f32], nbj: usize, col: &'a mut [f32]) -> Operand<'a> {
    let cols = nbj * k.pixels(g);
    let data = if g.direct && nbj == 1 {
        xs
    } else {
        im2col(g, k, xs, nbj, col);
        &col[..g.ckk * cols]
    };
    Operand {
        data,
        ld: cols,
        trans: false,
    }
}

/// The output gradient `G [O, cols]` of chunk `k` of the images `gys` (`nbj` of them), `G^T`
/// when `trans`: a single image's is read in place, a block's is gathered into `blk`.
#[inline(always)]
fn out_grads<'a>(
    g: &Geo,
    k: Chunk,
    gys: &'a [f32],
    nbj: usize,
    blk: &'a mut [f32],
    trans: bool,
) -> Operand<'a> {
    if nbj == 1 {
        return Operand {
            data: &gys[k.r0 * g.ow..],
            ld: g.ohw,
            trans,
        };
    }
    let cols = nbj * k.pixels(g);
    gather_out(g, k, gys, nbj, blk);
    Operand {
        data: &blk[..g.o * cols],
        ld: cols,
        trans,
    }
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
        shape.check(input.len(), weight.len(), output.len())?;
        let par = self.par();
        DataPass::Forward.run(&par, shape, output, workspace, |g, b, ys, grp| {
            let w = weights(g, weight, false);
            let xs = b.images(input, g.in_image());
            g.for_chunks(|k| {
                let cols = b.len * k.pixels(g);
                let x = columns(g, k, xs, b.len, grp.col);
                let dims = [g.o, cols, g.ckk];
                if b.len == 1 {
                    let y = &mut ys[k.r0 * g.ow..];
                    matmul(grp.threads, dims, 1.0, 0.0, w, x, y, g.ohw);
                } else {
                    matmul(grp.threads, dims, 1.0, 0.0, w, x, grp.blk, cols);
                    scatter_out(g, k, grp.blk, b.len, ys);
                }
            });
        })
    }

    fn conv2d_backward_data(
        &self,
        shape: &Conv2dShape,
        grad_output: &Self::Buffer,
        weight: &Self::Buffer,
        grad_input: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        shape.check(grad_input.len(), weight.len(), grad_output.len())?;
        let par = self.par();
        DataPass::BackwardData.run(&par, shape, grad_input, workspace, |g, b, gx, grp| {
            // op(A) = W^T: [ckk, O] from W stored [O, ckk].
            let wt = weights(g, weight, true);
            let gys = b.images(grad_output, g.out_image());
            if !g.direct {
                gx.fill(0.0);
            }
            g.for_chunks(|k| {
                let cols = b.len * k.pixels(g);
                let gy = out_grads(g, k, gys, b.len, grp.blk, false);
                let dims = [g.ckk, cols, g.o];
                if g.direct && b.len == 1 {
                    matmul(grp.threads, dims, 1.0, 0.0, wt, gy, gx, cols);
                } else {
                    matmul(grp.threads, dims, 1.0, 0.0, wt, gy, grp.col, cols);
                    col2im(g, k, &mut *grp.col, b.len, gx);
                }
            });
        })
    }

    fn conv2d_backward_filter(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        grad_output: &Self::Buffer,
        grad_weight: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        shape.check(input.len(), grad_weight.len(), grad_output.len())?;
        let w_len = shape.weight_len();
        if w_len == 0 || shape.batch == 0 {
            return Ok(());
        }
        let par = self.par();
        let g = plan(&par, shape, workspace.len())?;
        if g.ohw == 0 {
            return Ok(());
        }
        let (in_img, out_img) = (g.in_image(), g.out_image());
        // Each group of images sums `grad_W^T [ckk, O] = sum_B col_B [ckk, nb*P] x G_B^T` into its
        // own partial (the gemm crate is several times faster producing this layout than
        // `grad_W [O, ckk]` directly when O is small), then the partials are added, transposed.
        let nothing = Rows(&mut [], 0);
        for_blocks(
            &par,
            &g,
            shape.batch,
            g.nb_filter,
            nothing,
            workspace,
            |b, _, grp| {
                let (xs, gys) = (b.images(input, in_img), b.images(grad_output, out_img));
                let mut chunk = |k: Chunk| {
                    let cols = b.len * k.pixels(&g);
                    let x = columns(&g, k, xs, b.len, grp.col);
                    let gy = out_grads(&g, k, gys, b.len, grp.blk, true);
                    let dims = [g.ckk, g.o, cols];
                    let beta = if b.first && k.r0 == 0 { 0.0 } else { 1.0 };
                    matmul(grp.threads, dims, 1.0, beta, x, gy, grp.partial, g.o);
                };
                if b.len == 1 {
                    g.for_chunks(chunk);
                } else {
                    chunk(Chunk::full(&g));
                }
            },
        );
        // grad_W[o][i] += sum_g partial_g[i][o], threaded over output channels, in TILE x TILE
        // blocks transposed on the stack (walking grad_W by columns was 16% of the pass at
        // O = 2048: its rows are a multiple of 4 KiB apart and fight over the same cache sets).
        const TILE: usize = 16;
        let (n_groups, per_group, skip) = (g.groups, g.per_group(), g.col + g.blk);
        let ws: &[f32] = workspace;
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
}
