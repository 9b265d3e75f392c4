//! Parameter updates: SGD with momentum (PyTorch `torch.optim.SGD` semantics) and the
//! momentum encoder's exponential moving average, split into element chunks across threads.

use dscl_core::backend::OptimOps;
use dscl_core::desc::SgdParams;
use dscl_core::error::check_len;
use dscl_core::Result;

use crate::parallel::{unit, Par, Rows, ELEMENT_GRAIN};
use crate::simd;
use crate::CpuBackend;

/// `g = grad + wd * p`; `v = g` (first step) or `momentum * v + (1 - dampening) * g`;
/// `p -= lr * (nesterov ? g + momentum * v : v)`.
pub(crate) fn sgd_momentum(
    par: &Par,
    p: &SgdParams,
    weights: &mut [f32],
    grads: &[f32],
    velocity: &mut [f32],
    len: usize,
) -> Result<()> {
    p.check_update(&*weights, grads, &*velocity, len)?;
    let lr = p.lr as f32;
    let mom = p.momentum as f32;
    let wd = p.weight_decay as f32;
    let damp = (1.0 - p.dampening) as f32;
    let (nesterov, first) = (p.nesterov, p.first_step);
    let use_momentum = p.momentum != 0.0;
    par.run(
        len,
        ELEMENT_GRAIN,
        (Rows(&mut weights[..len], 1), Rows(&mut velocity[..len], 1)),
        |r, (Rows(w, _), Rows(v, _))| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for ((wv, vv), &gv) in w.iter_mut().zip(v.iter_mut()).zip(&grads[r]) {
                        let g = gv + wd * *wv;
                        let dir = if use_momentum {
                            let nv = if first { g } else { mom * *vv + damp * g };
                            *vv = nv;
                            if nesterov {
                                g + mom * nv
                            } else {
                                nv
                            }
                        } else {
                            g
                        };
                        *wv -= lr * dir;
                    }
                },
            )
        },
        unit,
    );
    Ok(())
}

/// `target = momentum * target + (1 - momentum) * source`.
pub(crate) fn ema(
    par: &Par,
    momentum: f64,
    source: &[f32],
    target: &mut [f32],
    len: usize,
) -> Result<()> {
    check_len("ema source", source.len(), len)?;
    check_len("ema target", target.len(), len)?;
    let m = momentum as f32;
    let one_m = (1.0 - momentum) as f32;
    par.run(
        len,
        ELEMENT_GRAIN,
        Rows(&mut target[..len], 1),
        |r, Rows(t, _)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for (tv, &sv) in t.iter_mut().zip(&source[r]) {
                        *tv = m * *tv + one_m * sv;
                    }
                },
            )
        },
        unit,
    );
    Ok(())
}

impl<'a> OptimOps for CpuBackend<'a> {
    fn sgd_momentum_update(
        &self,
        params: &SgdParams,
        weights: &mut Self::Buffer,
        grads: &Self::Buffer,
        velocity: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        sgd_momentum(&self.par(), params, weights, grads, velocity, len)
    }

    fn ema_update(
        &self,
        momentum: f64,
        source: &Self::Buffer,
        target: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        ema(&self.par(), momentum, source, target, len)
    }
}
