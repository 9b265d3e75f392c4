//! GEMM and the linear layer's bias.
//!
//! The GEMM kernel (`shaders/gemm.wgsl`) tiles C in 64 x 64 blocks per workgroup and stages
//! op(A) and op(B) through workgroup memory; its loads come in two bindings: A and B as vec4
//! arrays (4 elements per load, any offset or leading dimension), or as f32 arrays when an
//! operand's last vec4 would run past the end of its buffer. Each operand is bound as the
//! window its matrices span (not the whole buffer), so a product reading a small part of a
//! large buffer stays inside the binding limit. Grids beyond the per-dimension workgroup limit
//! are split over several dispatches.

use dscl_core::backend::DenseOps;
use dscl_core::desc::{GemmDesc, MatrixLayout};
use dscl_core::error::check_len;
use dscl_core::{Error, Result};

use super::{f32_bits, groups, word};
use crate::buffer::Window;
use crate::kernel::{kernel, Kernel};
use crate::recorder::MAX_GROUPS_PER_DIM;
use crate::{WgpuBackend, WgpuBuffer};

/// A and B bound as vec4 arrays: a quarter of the loads (lavapipe pays per load, per
/// invocation).
const GEMM_VEC4: &str = concat!(
    include_str!("../shaders/gemm_vec4.wgsl"),
    include_str!("../shaders/gemm.wgsl")
);
/// A and B bound as f32 arrays, for an operand whose last vec4 is not inside its buffer.
const GEMM_F32: &str = concat!(
    include_str!("../shaders/gemm_f32.wgsl"),
    include_str!("../shaders/gemm.wgsl")
);
const BIAS: &str = include_str!("../shaders/bias.wgsl");

kernel!(GEMM4_NN, GEMM_VEC4, "gemm_nn", [Read, Read, ReadWrite], 64);
kernel!(GEMM4_NT, GEMM_VEC4, "gemm_nt", [Read, Read, ReadWrite], 64);
kernel!(GEMM4_TN, GEMM_VEC4, "gemm_tn", [Read, Read, ReadWrite], 64);
kernel!(GEMM4_TT, GEMM_VEC4, "gemm_tt", [Read, Read, ReadWrite], 64);
kernel!(GEMM1_NN, GEMM_F32, "gemm_nn", [Read, Read, ReadWrite], 64);
kernel!(GEMM1_NT, GEMM_F32, "gemm_nt", [Read, Read, ReadWrite], 64);
kernel!(GEMM1_TN, GEMM_F32, "gemm_tn", [Read, Read, ReadWrite], 64);
kernel!(GEMM1_TT, GEMM_F32, "gemm_tt", [Read, Read, ReadWrite], 64);
kernel!(BIAS_ADD, BIAS, "bias_add", [Read, ReadWrite], 256);
kernel!(BIAS_BACKWARD, BIAS, "bias_backward", [Read, ReadWrite], 256);

/// Rows and columns of C one gemm workgroup computes (the shader's `TILE`).
const TILE: usize = 64;

/// One operand as the kernel addresses it: its window, and offset, leading dimension and batch
/// stride relative to that window, as kernel words.
struct Bound<'a> {
    window: Window<'a>,
    offset: u32,
    ld: u32,
    stride: u32,
}

/// Where `batch` matrices of `rows x cols` stored at `layout` lie: (first element, elements
/// spanned, leading dimension, batch stride). Degenerate leading dimensions (one stored row)
/// and batch strides (one matrix) are never followed, so they become 0 rather than being sent
/// (they may not fit in 32 bits).
fn extent(
    layout: &MatrixLayout,
    batch: usize,
    rows: usize,
    cols: usize,
) -> (usize, usize, usize, usize) {
    let ld = if rows <= 1 { 0 } else { layout.ld };
    let stride = if batch <= 1 { 0 } else { layout.batch_stride };
    // The descriptor's check has shown that this span lies inside the buffer, so it does not
    // overflow.
    let span = batch.saturating_sub(1) * stride + rows.saturating_sub(1) * ld + cols;
    (layout.offset, span, ld, stride)
}

fn bound<'a>(
    what: &'static str,
    window: Window<'a>,
    offset: usize,
    ld: usize,
    stride: usize,
) -> Result<Bound<'a>> {
    Ok(Bound {
        window,
        offset: word(what, offset)?,
        ld: word(what, ld)?,
        stride: word(what, stride)?,
    })
}

/// Binds the elements an operand spans, from the aligned address at or below its first.
fn bind<'a>(
    be: &WgpuBackend,
    what: &'static str,
    buf: &'a WgpuBuffer<f32>,
    layout: &MatrixLayout,
    batch: usize,
    rows: usize,
    cols: usize,
) -> Result<Bound<'a>> {
    let (start, span, ld, stride) = extent(layout, batch, rows, cols);
    let align = be.rec().ctx().limits.min_storage_buffer_offset_alignment as u64;
    let (window, offset) = buf.window(start, span, align);
    bound(what, window, offset, ld, stride)
}

/// Binds an operand as whole vec4s: from a 16-byte boundary (and the binding alignment)
/// through the vec4 holding its last element. `None` when that vec4 runs past the buffer.
fn bind_vec4<'a>(
    be: &WgpuBackend,
    what: &'static str,
    buf: &'a WgpuBuffer<f32>,
    layout: &MatrixLayout,
    batch: usize,
    rows: usize,
    cols: usize,
) -> Result<Option<Bound<'a>>> {
    let (start, span, ld, stride) = extent(layout, batch, rows, cols);
    let align = (be.rec().ctx().limits.min_storage_buffer_offset_alignment as usize / 4).max(4);
    let first = start / align * align;
    let end = (start + span).next_multiple_of(4);
    if end > buf.capacity() {
        return Ok(None);
    }
    let window = Window {
        raw: &buf.raw,
        id: buf.id,
        byte_start: (first * 4) as u64,
        byte_len: ((end - first) * 4) as u64,
    };
    bound(what, window, start - first, ld, stride).map(Some)
}

/// A one-element window for an operand the kernel does not read.
fn unread(buf: &WgpuBuffer<f32>) -> Bound<'_> {
    Bound {
        window: buf.window(0, 1, 4).0,
        offset: 0,
        ld: 0,
        stride: 0,
    }
}

/// Row lanes per column in `bias_backward`: enough that each lane sums about 32 rows, at most
/// the whole workgroup (a power of two, as the shader's pairwise reduction needs).
fn bias_lanes(rows: usize) -> u32 {
    (rows.div_ceil(32).next_power_of_two()).min(256) as u32
}

impl DenseOps for WgpuBackend {
    fn gemm(
        &self,
        desc: &GemmDesc,
        a: &Self::Buffer,
        b: &Self::Buffer,
        c: &mut Self::Buffer,
    ) -> Result<()> {
        desc.check(a.len, b.len, c.len)?;
        let (m, n, batch) = (desc.m, desc.n, desc.batch);
        if batch == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        // BLAS semantics, as the CPU backend: A and B are not read when alpha = 0 (their offsets
        // need not even lie inside the buffers when k = 0).
        let reads_ab = desc.k > 0 && desc.alpha != 0.0;
        let k = if reads_ab { desc.k } else { 0 };
        let (ar, ac) = if desc.trans_a { (k, m) } else { (m, k) };
        let (br, bc) = if desc.trans_b { (n, k) } else { (k, n) };
        let vec4 = if reads_ab {
            match (
                bind_vec4(self, "gemm A", a, &desc.a, batch, ar, ac)?,
                bind_vec4(self, "gemm B", b, &desc.b, batch, br, bc)?,
            ) {
                (Some(x), Some(y)) => Some((x, y)),
                _ => None,
            }
        } else {
            None
        };
        let (kernels, ba, bb) = match vec4 {
            Some((x, y)) => ([&GEMM4_NN, &GEMM4_NT, &GEMM4_TN, &GEMM4_TT], x, y),
            None if reads_ab => (
                [&GEMM1_NN, &GEMM1_NT, &GEMM1_TN, &GEMM1_TT],
                bind(self, "gemm A", a, &desc.a, batch, ar, ac)?,
                bind(self, "gemm B", b, &desc.b, batch, br, bc)?,
            ),
            None => (
                [&GEMM1_NN, &GEMM1_NT, &GEMM1_TN, &GEMM1_TT],
                unread(a),
                unread(b),
            ),
        };
        let kernel: &'static Kernel =
            kernels[usize::from(desc.trans_a) * 2 + usize::from(desc.trans_b)];
        let bc = bind(self, "gemm C", c, &desc.c, batch, m, n)?;
        let mut words = [
            word("gemm m", m)?,
            word("gemm n", n)?,
            word("gemm k", k)?,
            ba.ld,
            bb.ld,
            bc.ld,
            ba.offset,
            bb.offset,
            bc.offset,
            ba.stride,
            bb.stride,
            bc.stride,
            f32_bits(desc.alpha),
            f32_bits(desc.beta),
            0,
            0,
            0,
        ];
        let windows = [ba.window, bb.window, bc.window];
        let max = MAX_GROUPS_PER_DIM as usize;
        let (row_tiles, col_tiles) = (m.div_ceil(TILE), n.div_ceil(TILE));
        for t0 in (0..batch).step_by(max) {
            for r0 in (0..row_tiles).step_by(max) {
                for c0 in (0..col_tiles).step_by(max) {
                    words[14] = word("gemm batch", t0)?;
                    words[15] = word("gemm rows", r0)?;
                    words[16] = word("gemm cols", c0)?;
                    let grid = [
                        (col_tiles - c0).min(max) as u32,
                        (row_tiles - r0).min(max) as u32,
                        (batch - t0).min(max) as u32,
                    ];
                    self.rec().dispatch(kernel, &windows, &words, grid)?;
                }
            }
        }
        Ok(())
    }

    fn bias_add(
        &self,
        x: &mut Self::Buffer,
        bias: &Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let len = rows.saturating_mul(cols);
        check_len("bias_add x", x.len, len)?;
        check_len("bias_add bias", bias.len, cols)?;
        if len == 0 {
            return Ok(());
        }
        let ctx = self.rec().ctx();
        let align = ctx.limits.min_storage_buffer_offset_alignment as u64;
        let max_elems = (ctx.max_binding_bytes() / 4) as usize;
        // Whole rows per chunk, at most one grid row each, inside the binding limit (the window
        // may start up to one alignment unit early).
        let chunk_rows = (max_elems.saturating_sub((align as usize / 4).max(1)) / cols)
            .min(MAX_GROUPS_PER_DIM as usize);
        if chunk_rows == 0 {
            return Err(Error::InvalidArgument {
                what: "bias_add",
                reason: "a row is larger than the adapter's storage binding limit",
            });
        }
        let cols_word = word("bias_add cols", cols)?;
        let col_groups = word("bias_add cols", cols.div_ceil(256))?;
        let bias_window = bias.window(0, cols, align).0;
        for r0 in (0..rows).step_by(chunk_rows) {
            let n = chunk_rows.min(rows - r0);
            let (xw, xoff) = x.window(r0 * cols, n * cols, align);
            self.rec().dispatch(
                &BIAS_ADD,
                &[bias_window, xw],
                &[word("bias_add", n)?, word("bias_add", xoff)?, cols_word],
                [col_groups, n as u32, 1],
            )?;
        }
        Ok(())
    }

    fn bias_backward(
        &self,
        grad_out: &Self::Buffer,
        grad_bias: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let len = rows.saturating_mul(cols);
        check_len("bias_backward grad_out", grad_out.len, len)?;
        check_len("bias_backward grad_bias", grad_bias.len, cols)?;
        if len == 0 {
            return Ok(());
        }
        let align = self.rec().ctx().limits.min_storage_buffer_offset_alignment as u64;
        let lanes = bias_lanes(rows);
        let width = (256 / lanes) as usize;
        self.rec().dispatch(
            &BIAS_BACKWARD,
            &[
                grad_out.window(0, len, align).0,
                grad_bias.window(0, cols, align).0,
            ],
            &[
                word("bias_backward rows", rows)?,
                word("bias_backward cols", cols)?,
                lanes,
            ],
            groups(cols.div_ceil(width), 1)?,
        )
    }
}

/// What the conformance suite does not reach at its shapes: grids split over several
/// dispatches, and bias_backward's multi-lane reduction.
#[cfg(test)]
mod tests {
    use dscl_core::backend::prelude::*;
    use dscl_core::desc::{GemmDesc, MatrixLayout};

    use crate::WgpuBackend;

    fn backend() -> Option<WgpuBackend> {
        match WgpuBackend::new() {
            Ok(be) => Some(be),
            Err(e) => {
                println!("skipped: no wgpu adapter ({e})");
                None
            }
        }
    }

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn upload(be: &WgpuBackend, data: &[f32]) -> crate::WgpuBuffer<f32> {
        let mut buf = be.alloc(data.len()).unwrap();
        be.upload(&mut buf, 0, data).unwrap();
        buf
    }

    fn download(be: &WgpuBackend, buf: &crate::WgpuBuffer<f32>) -> Vec<f32> {
        let mut out = vec![0.0; buf.len];
        be.download(buf, 0, &mut out).unwrap();
        out
    }

    fn check_gemm(be: &WgpuBackend, d: &GemmDesc, a_len: usize, b_len: usize, c_len: usize) {
        let (ha, hb, hc) = (values(a_len, 1), values(b_len, 2), values(c_len, 3));
        let (a, b, mut c) = (upload(be, &ha), upload(be, &hb), upload(be, &hc));
        be.gemm(d, &a, &b, &mut c).unwrap();
        let got = download(be, &c);
        let at = |l: &MatrixLayout, tr: bool, t: usize, i: usize, p: usize| {
            let (r, q) = if tr { (p, i) } else { (i, p) };
            l.offset + t * l.batch_stride + r * l.ld + q
        };
        let mut want: Vec<f64> = hc.iter().map(|&v| v as f64).collect();
        for t in 0..d.batch {
            for i in 0..d.m {
                for j in 0..d.n {
                    let dot: f64 = (0..d.k)
                        .map(|p| {
                            ha[at(&d.a, d.trans_a, t, i, p)] as f64
                                * hb[at(&d.b, d.trans_b, t, p, j)] as f64
                        })
                        .sum();
                    let o = at(&d.c, false, t, i, j);
                    want[o] = d.alpha * dot + d.beta * hc[o] as f64;
                }
            }
        }
        for (e, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let tol = 1e-5 * (d.k as f64 + 2.0);
            assert!((g as f64 - w).abs() <= tol, "C[{e}]: got {g}, want {w}");
        }
    }

    #[test]
    fn gemm_splits_batches_beyond_the_grid_limit() {
        let Some(be) = backend() else { return };
        let batch = 65_537;
        let (m, n, k) = (2, 3, 5);
        let d = GemmDesc {
            batch,
            a: MatrixLayout::strided(1, k, m * k),
            b: MatrixLayout::strided(0, k, n * k),
            c: MatrixLayout::strided(2, n + 1, m * (n + 1)),
            ..GemmDesc::new(m, n, k, false, true).beta(0.5)
        };
        check_gemm(
            &be,
            &d,
            1 + batch * m * k,
            batch * n * k,
            2 + batch * m * (n + 1),
        );
    }

    #[test]
    fn gemm_splits_column_tiles_beyond_the_grid_limit() {
        let Some(be) = backend() else { return };
        // 65536 column tiles of 64.
        let (m, n, k) = (1, 64 * 65_536 + 3, 1);
        let d = GemmDesc::new(m, n, k, false, false).alpha(2.0);
        check_gemm(&be, &d, m * k, k * n, m * n);
    }

    #[test]
    fn gemm_vec4_and_f32_paths() {
        let Some(be) = backend() else { return };
        for (tail, trans_a, trans_b) in [(0, false, false), (3, true, false), (1, true, true)] {
            // Exact lengths end mid-vec4 (the f32 kernel); with a tail of 3 the vec4 one runs.
            let (m, n, k) = (67, 45, 33);
            let d = GemmDesc::new(m, n, k, trans_a, trans_b).beta(-1.0);
            check_gemm(&be, &d, m * k + tail, k * n + tail, m * n);
        }
    }

    #[test]
    fn bias_backward_sums_many_rows() {
        let Some(be) = backend() else { return };
        for (rows, cols) in [(1, 5), (33, 7), (1000, 3), (5000, 300), (100_000, 1)] {
            let go = values(rows * cols, 4);
            let gb0 = values(cols, 5);
            let grad_out = upload(&be, &go);
            let mut gb = upload(&be, &gb0);
            be.bias_backward(&grad_out, &mut gb, rows, cols).unwrap();
            let got = download(&be, &gb);
            for c in 0..cols {
                let s: f64 = (0..rows).map(|r| go[r * cols + c] as f64).sum();
                let want = gb0[c] as f64 + s;
                let tol = 1e-6 * (rows as f64).sqrt() * 4.0 + 1e-6;
                assert!(
                    (got[c] as f64 - want).abs() <= tol,
                    "{rows}x{cols} col {c}: got {}, want {want}",
                    got[c]
                );
            }
        }
    }

    #[test]
    fn bias_add_adds_per_column() {
        let Some(be) = backend() else { return };
        for (rows, cols) in [(1, 1), (3, 300), (70_000, 2)] {
            let x0 = values(rows * cols + 2, 6);
            let bias = values(cols, 7);
            let mut x = upload(&be, &x0);
            let b = upload(&be, &bias);
            be.bias_add(&mut x, &b, rows, cols).unwrap();
            let got = download(&be, &x);
            for (e, (&g, &v)) in got.iter().zip(&x0).enumerate() {
                let want = if e < rows * cols {
                    v + bias[e % cols]
                } else {
                    v
                };
                assert_eq!(g, want, "{rows}x{cols} element {e}");
            }
        }
    }
}
