//! Pooling: max pooling (PyTorch semantics: padding never selected, first maximum in row-major
//! window order wins, a NaN in the window is selected and propagates) and global average
//! pooling, forward and backward side by side, threaded over (image, channel) planes.

use dscl_core::desc::PoolShape;
use dscl_core::error::{check_len, ensure};
use dscl_core::{Fault, FaultKind, Result};

use crate::parallel::{first_fault, unit, Par, Rows, ELEMENT_GRAIN};
use crate::simd;

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
    let (h, w) = (shape.in_height, shape.in_width);
    let (oh, ow) = (shape.out_height(), shape.out_width());
    let (k, st, pad) = (shape.kernel, shape.stride, shape.padding);
    let (in_plane, out_plane) = (h * w, oh * ow);
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
            let mut fault = None;
            for (q, p) in range.enumerate() {
                let xp = &x[p * in_plane..(p + 1) * in_plane];
                let yp = &mut y[q * out_plane..(q + 1) * out_plane];
                let ap = &mut am[q * out_plane..(q + 1) * out_plane];
                for r in 0..oh {
                    // Window rows [h0, h1) clipped to the input (padding counts as -inf).
                    let top = (r * st) as isize - pad as isize;
                    let h0 = top.max(0) as usize;
                    let h1 = ((top + k as isize).max(0) as usize).min(h);
                    for c in 0..ow {
                        let left = (c * st) as isize - pad as isize;
                        let w0 = left.max(0) as usize;
                        let w1 = ((left + k as isize).max(0) as usize).min(w);
                        let mut best = f32::NEG_INFINITY;
                        let mut at = h0 * w + w0;
                        let mut nan = false;
                        for hh in h0..h1 {
                            for ww in w0..w1 {
                                let v = xp[hh * w + ww];
                                if v > best || v.is_nan() {
                                    best = v;
                                    at = hh * w + ww;
                                    nan |= v.is_nan();
                                }
                            }
                        }
                        let o = r * ow + c;
                        yp[o] = best;
                        ap[o] = at as u32;
                        if nan && fault.is_none() {
                            fault = Some(Fault {
                                kind: FaultKind::NonFinite,
                                index: p * out_plane + o,
                                value: 0,
                            });
                        }
                    }
                }
            }
            fault
        },
        first_fault,
    ))
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

fn check_global(
    what: &'static str,
    x_len: usize,
    y_len: usize,
    batch: usize,
    channels: usize,
    spatial: usize,
) -> Result<(usize, usize)> {
    let planes = batch.saturating_mul(channels);
    let len = planes.saturating_mul(spatial);
    check_len(what, x_len, len)?;
    check_len(what, y_len, planes)?;
    ensure(
        spatial >= 1 || planes == 0,
        what,
        "spatial size must be at least 1",
    )?;
    Ok((planes, len))
}

/// `y[n][c] = mean_s x[n][c][s]`.
pub(crate) fn global_avg_forward(
    par: &Par,
    x: &[f32],
    y: &mut [f32],
    batch: usize,
    channels: usize,
    spatial: usize,
) -> Result<()> {
    let (planes, _) = check_global(
        "global_avg_pool",
        x.len(),
        y.len(),
        batch,
        channels,
        spatial,
    )?;
    if planes == 0 {
        return Ok(());
    }
    let inv = 1.0 / spatial as f64;
    par.run(
        planes,
        (ELEMENT_GRAIN / spatial).max(1),
        Rows(&mut y[..planes], 1),
        |range, Rows(y, _)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for (q, p) in range.enumerate() {
                        y[q] = (simd::sum(&x[p * spatial..(p + 1) * spatial]) * inv) as f32;
                    }
                },
            )
        },
        unit,
    );
    Ok(())
}

/// `grad_x[n][c][s] = grad_y[n][c] / spatial`.
pub(crate) fn global_avg_backward(
    par: &Par,
    grad_y: &[f32],
    grad_x: &mut [f32],
    batch: usize,
    channels: usize,
    spatial: usize,
) -> Result<()> {
    let (planes, len) = check_global(
        "global_avg_pool_backward",
        grad_x.len(),
        grad_y.len(),
        batch,
        channels,
        spatial,
    )?;
    if len == 0 {
        return Ok(());
    }
    let inv = 1.0 / spatial as f64;
    par.run(
        planes,
        (ELEMENT_GRAIN / spatial).max(1),
        Rows(&mut grad_x[..len], spatial),
        |range, Rows(gx, _)| {
            for (q, p) in range.enumerate() {
                gx[q * spatial..(q + 1) * spatial].fill((grad_y[p] as f64 * inv) as f32);
            }
        },
        unit,
    );
    Ok(())
}
