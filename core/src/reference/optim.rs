//! Parameter updates: SGD with momentum (torch.optim.SGD) and the momentum encoder's EMA.

use super::ReferenceBackend;
use crate::desc::SgdParams;
use crate::element::Element;
use crate::error::{check_len, Result};

/// One `torch.optim.SGD` step on each of `len` parameters:
/// `g = grad + weight_decay * p`; with momentum, `v = g` on the first step and
/// `v = momentum * v + (1 - dampening) * g` afterwards, the direction being `g + momentum * v`
/// (Nesterov) or `v`; `p -= lr * direction`.
///
/// With `momentum == 0` PyTorch keeps no velocity and steps along `g` itself, whatever the
/// dampening; so does this, leaving `velocity` untouched.
pub fn sgd_momentum_update<T: Element>(
    params: &SgdParams,
    weights: &mut [T],
    grads: &[T],
    velocity: &mut [T],
    len: usize,
) -> Result<()> {
    params.check_update(&*weights, grads, &*velocity, len)?;
    for e in 0..len {
        let p = weights[e].widen();
        let g = grads[e].widen() + params.weight_decay * p;
        let direction = if params.momentum == 0.0 {
            g
        } else {
            let v = if params.first_step {
                g
            } else {
                params.momentum * velocity[e].widen() + (1.0 - params.dampening) * g
            };
            velocity[e] = T::from_f64(v);
            if params.nesterov {
                g + params.momentum * v
            } else {
                v
            }
        };
        weights[e] = T::from_f64(p - params.lr * direction);
    }
    Ok(())
}

/// `target = momentum * target + (1 - momentum) * source`.
pub fn ema_update<T: Element>(
    momentum: f64,
    source: &[T],
    target: &mut [T],
    len: usize,
) -> Result<()> {
    check_len("ema source", source.len(), len)?;
    check_len("ema target", target.len(), len)?;
    for (t, &s) in target[..len].iter_mut().zip(&source[..len]) {
        *t = T::from_f64(momentum * t.widen() + (1.0 - momentum) * s.widen());
    }
    Ok(())
}

impl<T: Element> crate::backend::OptimOps for ReferenceBackend<T> {
    fn sgd_momentum_update(
        &self,
        params: &SgdParams,
        weights: &mut Self::Buffer,
        grads: &Self::Buffer,
        velocity: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        sgd_momentum_update(params, weights, grads, velocity, len)
    }

    fn ema_update(
        &self,
        momentum: f64,
        source: &Self::Buffer,
        target: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        ema_update(momentum, source, target, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(first_step: bool) -> SgdParams {
        SgdParams {
            lr: 0.5,
            momentum: 0.9,
            weight_decay: 0.0,
            dampening: 0.0,
            nesterov: false,
            first_step,
        }
    }

    #[test]
    fn momentum_steps_by_hand() {
        let (mut w, mut v) = ([1.0f64], [123.0f64]);
        sgd_momentum_update(&params(true), &mut w, &[2.0], &mut v, 1).unwrap();
        assert_eq!((w, v), ([0.0], [2.0]));
        sgd_momentum_update(&params(false), &mut w, &[1.0], &mut v, 1).unwrap();
        // v = 0.9 * 2 + 1 = 2.8.
        assert!((v[0] - 2.8).abs() < 1e-15 && (w[0] + 1.4).abs() < 1e-15);
        let nesterov = SgdParams {
            nesterov: true,
            weight_decay: 1.0,
            ..params(false)
        };
        // g = 1 + 1 * (-1.4) = -0.4; v = 0.9 * 2.8 - 0.4 = 2.12; direction = -0.4 + 0.9 * 2.12.
        sgd_momentum_update(&nesterov, &mut w, &[1.0], &mut v, 1).unwrap();
        assert!((v[0] - 2.12).abs() < 1e-15);
        assert!((w[0] - (-1.4 - 0.5 * (-0.4 + 0.9 * 2.12))).abs() < 1e-15);
    }

    #[test]
    fn without_momentum_steps_along_the_gradient() {
        let plain = SgdParams {
            momentum: 0.0,
            dampening: 0.5,
            ..params(false)
        };
        let (mut w, mut v) = ([1.0f64], [7.0f64]);
        sgd_momentum_update(&plain, &mut w, &[2.0], &mut v, 1).unwrap();
        assert_eq!((w, v), ([0.0], [7.0]));
    }

    #[test]
    fn ema_moves_towards_source() {
        let mut target = [1.0f64, 2.0];
        ema_update(0.75, &[5.0, 2.0], &mut target, 2).unwrap();
        assert_eq!(target, [2.0, 2.0]);
        assert!(ema_update(0.75, &[5.0], &mut target, 2).is_err());
    }
}
