//! Pooling: max pooling (PyTorch semantics: padding never selected, first maximum in row-major
//! window order wins, a NaN in the window is selected and propagates) and global average
//! pooling, forward and backward side by side, threaded over (image, channel) planes.

use core::ops::Range;

use dscl_core::backend::PoolOps;
use dscl_core::desc::{check_global_pool, PoolShape};
use dscl_core::error::ensure;
use dscl_core::{Fault, FaultKind, Result};

use crate::parallel::{first_fault, unit, Par, Rows, ELEMENT_GRAIN};
use crate::simd;
use crate::CpuBackend;

pub(crate) fn max_forward(
    par: &Par,
    shape: &PoolShape,
    x: &[f32],
    y: &mut [f32],
    argmax: &mut [u32],
) -> Result<Option<Fault>> {
    shape.check(x.len(), y.len(), argmax.len())?;
    ensure(
        u32::try_from(shape.in_height * shape.in_width).is_ok(),
        "max_pool2d",
        "an input plane must have fewer than 2^32 elements (u32 argmax)",
    )?;
    let (out_plane, k) = (shape.out_height() * shape.out_width(), shape.kernel);
    let planes = shape.batch * shape.channels;
    let out_len = planes * out_plane;
    if out_len == 0 {
        return Ok(None);
    }
    Ok(par.run(
        planes,
        (ELEMENT_GRAIN / (out_plane * k * k).max(1)).max(1),
        (
            Rows(&mut y[..out_len], out_plane),
            Rows(&mut argmax[..out_len], out_plane),
        ),
        |range, (Rows(y, _), Rows(am, _))| {
            simd::dispatch(
                #[inline(always)]
                || max_planes(shape, x, range, y, am),
            )
        },
        first_fault,
    ))
}

/// Output columns computed together by [`max_forward`]'s interior path (one vector of lanes).
const POOL_LANES: usize = 16;

/// Max pooling of the planes `range` into `y` / `am` (their slices for those planes); returns
/// the first NaN fault.
#[inline(always)]
fn max_planes(
    shape: &PoolShape,
    x: &[f32],
    range: Range<usize>,
    y: &mut [f32],
    am: &mut [u32],
) -> Option<Fault> {
    let (h, w) = (shape.in_height, shape.in_width);
    let (oh, ow) = (shape.out_height(), shape.out_width());
    let (k, st, pad) = (shape.kernel, shape.stride, shape.padding);
    let (in_plane, out_plane) = (h * w, oh * ow);
    // Output columns whose windows lie inside the input row: [c_lo, c_hi).
    let c_lo = pad.div_ceil(st).min(ow);
    let c_hi = if w + pad >= k {
        ((w + pad - k) / st + 1).min(ow)
    } else {
        0
    }
    .max(c_lo);
    // Smallest output index holding a NaN (the border columns of a row are done after its
    // interior, so take the minimum rather than the first found).
    let mut first_nan = usize::MAX;
    for (q, p) in range.enumerate() {
        let xp = &x[p * in_plane..(p + 1) * in_plane];
        let yp = &mut y[q * out_plane..(q + 1) * out_plane];
        let ap = &mut am[q * out_plane..(q + 1) * out_plane];
        for r in 0..oh {
            // Window rows [h0, h1) clipped to the input (padding counts as -inf).
            let top = (r * st) as isize - pad as isize;
            let h0 = top.max(0) as usize;
            let h1 = ((top + k as isize).max(0) as usize).min(h);
            // Interior columns, POOL_LANES at a time: the same selects per lane, in
            // the same window order, without branches (the compiler vectorises the
            // lane loops).
            let mut c = c_lo;
            while c + POOL_LANES <= c_hi {
                let mut best = [f32::NEG_INFINITY; POOL_LANES];
                let base = c * st - pad;
                let mut at: [u32; POOL_LANES] =
                    core::array::from_fn(|l| (h0 * w + base + l * st) as u32);
                for hh in h0..h1 {
                    for dw in 0..k {
                        let start = hh * w + base + dw;
                        let src = &xp[start..start + (POOL_LANES - 1) * st + 1];
                        for l in 0..POOL_LANES {
                            let v = src[l * st];
                            let take = (v > best[l]) | v.is_nan();
                            best[l] = if take { v } else { best[l] };
                            at[l] = if take { (start + l * st) as u32 } else { at[l] };
                        }
                    }
                }
                let o = r * ow + c;
                yp[o..o + POOL_LANES].copy_from_slice(&best);
                ap[o..o + POOL_LANES].copy_from_slice(&at);
                if let Some(l) = best.iter().position(|v| v.is_nan()) {
                    first_nan = first_nan.min(p * out_plane + o + l);
                }
                c += POOL_LANES;
            }
            for c in (0..c_lo).chain(c..ow) {
                let left = (c * st) as isize - pad as isize;
                let w0 = left.max(0) as usize;
                let w1 = ((left + k as isize).max(0) as usize).min(w);
                let mut best = f32::NEG_INFINITY;
                let mut at = h0 * w + w0;
                // Branch-free selects: with random data the comparison is
                // unpredictable, and branches on it cost several times the loads.
                for hh in h0..h1 {
                    let row = &xp[hh * w + w0..hh * w + w1];
                    for (ww, &v) in (hh * w + w0..).zip(row) {
                        let take = (v > best) | v.is_nan();
                        best = if take { v } else { best };
                        at = if take { ww } else { at };
                    }
                }
                let o = r * ow + c;
                yp[o] = best;
                ap[o] = at as u32;
                // A NaN, once selected, is only replaced by a later NaN.
                if best.is_nan() {
                    first_nan = first_nan.min(p * out_plane + o);
                }
            }
        }
    }
    (first_nan != usize::MAX).then_some(Fault {
        kind: FaultKind::NonFinite,
        index: first_nan,
        value: 0,
    })
}

/// `grad_x = 0`, then `grad_x[plane + argmax[o]] += grad_y[o]`. An argmax outside its plane
/// (only a corrupted buffer holds one) is skipped, as the reference does.
pub(crate) fn max_backward(
    par: &Par,
    shape: &PoolShape,
    grad_y: &[f32],
    argmax: &[u32],
    grad_x: &mut [f32],
) -> Result<()> {
    shape.check(grad_x.len(), grad_y.len(), argmax.len())?;
    let in_plane = shape.in_height * shape.in_width;
    let out_plane = shape.out_height() * shape.out_width();
    let planes = shape.batch * shape.channels;
    let in_len = planes * in_plane;
    if in_len == 0 {
        return Ok(());
    }
    par.run(
        planes,
        (ELEMENT_GRAIN / in_plane).max(1),
        Rows(&mut grad_x[..in_len], in_plane),
        |range, Rows(gx, _)| {
            for (q, p) in range.enumerate() {
                let gp = &mut gx[q * in_plane..(q + 1) * in_plane];
                gp.fill(0.0);
                let outs = p * out_plane..(p + 1) * out_plane;
                for (&a, &g) in argmax[outs.clone()].iter().zip(&grad_y[outs]) {
                    if let Some(v) = gp.get_mut(a as usize) {
                        *v += g;
                    }
                }
            }
        },
        unit,
    );
    Ok(())
}

/// A checked global average pool: `planes` (image, channel) planes of `spatial` elements.
struct GlobalPool {
    planes: usize,
    spatial: usize,
}

impl GlobalPool {
    /// Checks the `[batch, channels, spatial]` side's length `x_len` and the `[batch, channels]`
    /// side's `y_len`, whichever pass reads or writes them.
    fn new(what: &'static str, x_len: usize, y_len: usize, dims: [usize; 3]) -> Result<Self> {
        let [batch, channels, spatial] = dims;
        let (planes, _) = check_global_pool(what, x_len, y_len, batch, channels, spatial)?;
        Ok(GlobalPool { planes, spatial })
    }

    /// Runs `body(planes, out, 1 / spatial)` over the planes, threaded, where `out` is the pass's
    /// output for those planes, `out_plane` elements a plane.
    fn run<F>(&self, par: &Par, out: &mut [f32], out_plane: usize, body: F)
    where
        F: Fn(Range<usize>, &mut [f32], f64) + Sync,
    {
        // No planes is the only empty case: the check demands `spatial >= 1` otherwise.
        if self.planes == 0 {
            return;
        }
        let inv = 1.0 / self.spatial as f64;
        par.run(
            self.planes,
            (ELEMENT_GRAIN / self.spatial).max(1),
            Rows(&mut out[..self.planes * out_plane], out_plane),
            |planes, Rows(out, _)| body(planes, out, inv),
            unit,
        );
    }
}

/// `y[n][c] = mean_s x[n][c][s]`.
pub(crate) fn global_avg_forward(
    par: &Par,
    x: &[f32],
    y: &mut [f32],
    dims: [usize; 3],
) -> Result<()> {
    let pool = GlobalPool::new("global_avg_pool", x.len(), y.len(), dims)?;
    let spatial = pool.spatial;
    pool.run(par, y, 1, |planes, y, inv| {
        simd::dispatch(
            #[inline(always)]
            || {
                for (q, p) in planes.enumerate() {
                    y[q] = (simd::sum(&x[p * spatial..(p + 1) * spatial]) * inv) as f32;
                }
            },
        )
    });
    Ok(())
}

/// `grad_x[n][c][s] = grad_y[n][c] / spatial`.
pub(crate) fn global_avg_backward(
    par: &Par,
    grad_y: &[f32],
    grad_x: &mut [f32],
    dims: [usize; 3],
) -> Result<()> {
    let what = "global_avg_pool_backward";
    let pool = GlobalPool::new(what, grad_x.len(), grad_y.len(), dims)?;
    let spatial = pool.spatial;
    pool.run(par, grad_x, spatial, |planes, gx, inv| {
        for (q, p) in planes.enumerate() {
            gx[q * spatial..(q + 1) * spatial].fill((grad_y[p] as f64 * inv) as f32);
        }
    });
    Ok(())
}

impl<'a> PoolOps for CpuBackend<'a> {
    fn max_pool2d_forward(
        &self,
        shape: &PoolShape,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        argmax: &mut Self::IndexBuffer,
    ) -> Result<()> {
        let fault = max_forward(&self.par(), shape, x, y, argmax)?;
        self.record(fault);
        Ok(())
    }

    fn max_pool2d_backward(
        &self,
        shape: &PoolShape,
        grad_y: &Self::Buffer,
        argmax: &Self::IndexBuffer,
        grad_x: &mut Self::Buffer,
    ) -> Result<()> {
        max_backward(&self.par(), shape, grad_y, argmax, grad_x)
    }

    fn global_avg_pool_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        global_avg_forward(&self.par(), x, y, [batch, channels, spatial])
    }

    fn global_avg_pool_backward(
        &self,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        global_avg_backward(&self.par(), grad_y, grad_x, [batch, channels, spatial])
    }
}
