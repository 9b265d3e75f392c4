//! Batch normalisation over `[batch, channels, spatial]`: training forward, inference forward
//! and backward, side by side. A call with several statistics groups runs its groups one after
//! the other, each on its own block of the batch, as separate calls would.
//!
//! Channels are processed in blocks of `CHANNEL_BLOCK`: first the per-channel statistics of the
//! block (in f64, threaded over channels; kept on the stack, so no allocation), then the
//! elementwise pass over the block's planes (threaded over planes), computed in f64 so that
//! outputs match an f64 oracle even when a channel's mean is large next to its spread.

use dscl_core::backend::batch_norm::{
    BnBackward, BnBackwardBuffers, BnInference, BnInferenceBuffers, BnTrain, BnTrainBuffers,
};
use dscl_core::backend::BatchNormOps;
use dscl_core::desc::BatchNormShape;
use dscl_core::Result;

use crate::parallel::{unit, Par, Rows, ELEMENT_GRAIN};
use crate::simd;
use crate::{CpuBackend, CpuBuffer};

/// Channels whose statistics are held at once (2 x 8 bytes each, on the stack).
const CHANNEL_BLOCK: usize = 64;

/// Sum of `x - mean` squared, in f64.
#[inline(always)]
fn sum_sq_dev(x: &[f32], mean: f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for ch in &mut chunks {
        for l in 0..8 {
            let d = ch[l] as f64 - mean;
            acc[l] += d * d;
        }
    }
    let mut s: f64 = acc.iter().sum();
    for &v in chunks.remainder() {
        let d = v as f64 - mean;
        s += d * d;
    }
    s
}

/// `(sum dy, sum dy * (x - mean))` in f64.
#[inline(always)]
fn sums_dy(x: &[f32], dy: &[f32], mean: f64) -> (f64, f64) {
    let mut a = [0.0f64; 8];
    let mut b = [0.0f64; 8];
    let mut xc = x.chunks_exact(8);
    let mut dc = dy.chunks_exact(8);
    for (xs, ds) in (&mut xc).zip(&mut dc) {
        for l in 0..8 {
            let g = ds[l] as f64;
            a[l] += g;
            b[l] += g * (xs[l] as f64 - mean);
        }
    }
    let mut sa: f64 = a.iter().sum();
    let mut sb: f64 = b.iter().sum();
    for (&xv, &dv) in xc.remainder().iter().zip(dc.remainder()) {
        sa += dv as f64;
        sb += dv as f64 * (xv as f64 - mean);
    }
    (sa, sb)
}

/// Runs `f(plane_data, channel - c0, plane_index)` over the planes of channels `c0..c1` of `data`
/// (`[batch, channels, spatial]`), threaded over planes.
fn for_block_planes<F>(
    par: &Par,
    shape: &BatchNormShape,
    c0: usize,
    c1: usize,
    data: &mut [f32],
    f: F,
) where
    F: Fn(&mut [f32], usize, usize) + Sync,
{
    let (c, s) = (shape.channels, shape.spatial);
    if s == 0 || shape.batch == 0 {
        return;
    }
    let start = c0 * s;
    let end = ((shape.batch - 1) * c + c1) * s;
    let planes = (end - start) / s;
    par.run(
        planes,
        (ELEMENT_GRAIN / s).max(1),
        Rows(&mut data[start..end], s),
        |range, Rows(d, _)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for (k, q) in range.enumerate() {
                        let plane = c0 + q;
                        let ch = plane % c;
                        if ch >= c0 && ch < c1 {
                            f(&mut d[k * s..(k + 1) * s], ch - c0, plane);
                        }
                    }
                },
            )
        },
        unit,
    );
}

pub(crate) fn forward_train(
    par: &Par,
    shape: &BatchNormShape,
    io: BnTrain<&[f32], &mut [f32]>,
) -> Result<()> {
    let n = shape.check_train(&io)?;
    let BnTrain {
        x,
        gamma,
        beta,
        y,
        save_mean,
        save_invstd,
        running_mean,
        running_var,
    } = io;
    let group = shape.group();
    for span in shape.group_spans() {
        forward_train_group(
            par,
            &group,
            n,
            &x[span.data.clone()],
            gamma,
            beta,
            &mut y[span.data],
            &mut save_mean[span.saved.clone()],
            &mut save_invstd[span.saved],
            running_mean,
            running_var,
            span.moves_running,
        );
    }
    Ok(())
}

/// One statistics group (`shape` is the group's), its buffers checked; the running statistics
/// are written only when `moves_running`.
#[allow(clippy::too_many_arguments)]
fn forward_train_group(
    par: &Par,
    shape: &BatchNormShape,
    n: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    save_mean: &mut [f32],
    save_invstd: &mut [f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    moves_running: bool,
) {
    let (c, s) = (shape.channels, shape.spatial);
    let (eps, mom) = (shape.eps, shape.momentum);
    let nf = n as f64;
    let mut c0 = 0;
    while c0 < c {
        let c1 = (c0 + CHANNEL_BLOCK).min(c);
        let mut mean = [0.0f64; CHANNEL_BLOCK];
        let mut invstd = [0.0f64; CHANNEL_BLOCK];
        par.run(
            c1 - c0,
            (ELEMENT_GRAIN / n).max(1),
            (
                (Rows(&mut mean[..c1 - c0], 1), Rows(&mut invstd[..c1 - c0], 1)),
                (
                    Rows(&mut save_mean[c0..c1], 1),
                    Rows(&mut save_invstd[c0..c1], 1),
                ),
                Rows(&mut running_mean[c0..c1], 1),
                Rows(&mut running_var[c0..c1], 1),
            ),
            |range, ((Rows(mu, _), Rows(is, _)), (Rows(sm, _), Rows(si, _)), Rows(rm, _), Rows(rv, _))| {
                simd::dispatch(#[inline(always)] || {
                    for (k, ch) in range.map(|q| q + c0).enumerate() {
                        let planes = (0..shape.batch).map(|b| &x[(b * c + ch) * s..(b * c + ch + 1) * s]);
                        let m = planes.clone().map(simd::sum).sum::<f64>() / nf;
                        let var = planes.map(|p| sum_sq_dev(p, m)).sum::<f64>() / nf;
                        let inv = 1.0 / libm::sqrt(var + eps);
                        mu[k] = m;
                        is[k] = inv;
                        sm[k] = m as f32;
                        si[k] = inv as f32;
                        if !moves_running {
                            continue;
                        }
                        rm[k] = ((1.0 - mom) * rm[k] as f64 + mom * m) as f32;
                        if n > 1 {
                            let unbiased = var * nf / (nf - 1.0);
                            rv[k] = ((1.0 - mom) * rv[k] as f64 + mom * unbiased) as f32;
                        }
                    }
                })
            },
            unit,
        );
        let (mean, invstd) = (&mean, &invstd);
        for_block_planes(par, shape, c0, c1, y, |yp, k, plane| {
            let ch = c0 + k;
            let scale = invstd[k] * gamma[ch] as f64;
            let shift = beta[ch] as f64;
            let mu = mean[k];
            let xp = &x[plane * s..(plane + 1) * s];
            for (yv, &xv) in yp.iter_mut().zip(xp) {
                *yv = ((xv as f64 - mu) * scale + shift) as f32;
            }
        });
        c0 = c1;
    }
}

pub(crate) fn forward_inference(
    par: &Par,
    shape: &BatchNormShape,
    io: BnInference<&[f32], &mut [f32]>,
) -> Result<()> {
    shape.check_inference(&io)?;
    let BnInference {
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        y,
    } = io;
    let (c, s, eps) = (shape.channels, shape.spatial, shape.eps);
    if c == 0 {
        return Ok(());
    }
    // The running statistics serve every group alike: one pass over the whole batch.
    let whole = BatchNormShape {
        groups: 1,
        ..*shape
    };
    for_block_planes(par, &whole, 0, c, y, |yp, ch, plane| {
        let scale = gamma[ch] as f64 / libm::sqrt(running_var[ch] as f64 + eps);
        let mu = running_mean[ch] as f64;
        let shift = beta[ch] as f64;
        let xp = &x[plane * s..(plane + 1) * s];
        for (yv, &xv) in yp.iter_mut().zip(xp) {
            *yv = ((xv as f64 - mu) * scale + shift) as f32;
        }
    });
    Ok(())
}

pub(crate) fn backward(
    par: &Par,
    shape: &BatchNormShape,
    io: BnBackward<&[f32], &mut [f32]>,
) -> Result<()> {
    let n = shape.check_backward(&io)?;
    let BnBackward {
        x,
        grad_y,
        gamma,
        save_mean,
        save_invstd,
        grad_x,
        grad_gamma,
        grad_beta,
    } = io;
    let group = shape.group();
    for span in shape.group_spans() {
        backward_group(
            par,
            &group,
            n,
            &x[span.data.clone()],
            &grad_y[span.data.clone()],
            gamma,
            &save_mean[span.saved.clone()],
            &save_invstd[span.saved],
            &mut grad_x[span.data],
            grad_gamma,
            grad_beta,
        );
    }
    Ok(())
}

/// One statistics group (`shape` is the group's), its buffers checked.
#[allow(clippy::too_many_arguments)]
fn backward_group(
    par: &Par,
    shape: &BatchNormShape,
    n: usize,
    x: &[f32],
    grad_y: &[f32],
    gamma: &[f32],
    save_mean: &[f32],
    save_invstd: &[f32],
    grad_x: &mut [f32],
    grad_gamma: &mut [f32],
    grad_beta: &mut [f32],
) {
    let (c, s) = (shape.channels, shape.spatial);
    let nf = n as f64;
    let mut c0 = 0;
    while c0 < c {
        let c1 = (c0 + CHANNEL_BLOCK).min(c);
        // Per channel of the block: mean(dy) and mean(dy * xhat).
        let mut mdy = [0.0f64; CHANNEL_BLOCK];
        let mut mdyx = [0.0f64; CHANNEL_BLOCK];
        par.run(
            c1 - c0,
            (ELEMENT_GRAIN / n).max(1),
            (
                (Rows(&mut mdy[..c1 - c0], 1), Rows(&mut mdyx[..c1 - c0], 1)),
                Rows(&mut grad_gamma[c0..c1], 1),
                Rows(&mut grad_beta[c0..c1], 1),
            ),
            |range, ((Rows(a, _), Rows(b, _)), Rows(gg, _), Rows(gb, _))| {
                simd::dispatch(
                    #[inline(always)]
                    || {
                        for (k, ch) in range.map(|q| q + c0).enumerate() {
                            let mean = save_mean[ch] as f64;
                            let inv = save_invstd[ch] as f64;
                            let (mut sdy, mut sdyx) = (0.0, 0.0);
                            for bi in 0..shape.batch {
                                let r = (bi * c + ch) * s..(bi * c + ch + 1) * s;
                                let (p, q) = sums_dy(&x[r.clone()], &grad_y[r], mean);
                                sdy += p;
                                sdyx += q;
                            }
                            sdyx *= inv;
                            gb[k] = (gb[k] as f64 + sdy) as f32;
                            gg[k] = (gg[k] as f64 + sdyx) as f32;
                            a[k] = sdy / nf;
                            b[k] = sdyx / nf;
                        }
                    },
                )
            },
            unit,
        );
        let (mdy, mdyx) = (&mdy, &mdyx);
        for_block_planes(par, shape, c0, c1, grad_x, |gp, k, plane| {
            let ch = c0 + k;
            let mean = save_mean[ch] as f64;
            let inv = save_invstd[ch] as f64;
            let g = gamma[ch] as f64 * inv;
            let r = plane * s..(plane + 1) * s;
            for ((o, &xv), &dv) in gp.iter_mut().zip(&x[r.clone()]).zip(&grad_y[r]) {
                let xhat = (xv as f64 - mean) * inv;
                *o = (g * (dv as f64 - mdy[k] - xhat * mdyx[k])) as f32;
            }
        });
        c0 = c1;
    }
}

impl<'a> BatchNormOps for CpuBackend<'a> {
    fn batch_norm_forward_train(
        &self,
        shape: &BatchNormShape,
        io: BnTrainBuffers<'_, Self>,
    ) -> Result<()> {
        forward_train(
            &self.par(),
            shape,
            io.map(CpuBuffer::as_slice, CpuBuffer::as_mut_slice),
        )
    }

    fn batch_norm_forward_inference(
        &self,
        shape: &BatchNormShape,
        io: BnInferenceBuffers<'_, Self>,
    ) -> Result<()> {
        forward_inference(
            &self.par(),
            shape,
            io.map(CpuBuffer::as_slice, CpuBuffer::as_mut_slice),
        )
    }

    fn batch_norm_backward(
        &self,
        shape: &BatchNormShape,
        io: BnBackwardBuffers<'_, Self>,
    ) -> Result<()> {
        backward(
            &self.par(),
            shape,
            io.map(CpuBuffer::as_slice, CpuBuffer::as_mut_slice),
        )
    }
}
