//! Batch normalisation over `[batch, channels, spatial]`: training forward (batch statistics,
//! running-statistics update), inference forward, and the training backward.

use super::ReferenceBackend;
use crate::desc::BatchNormShape;
use crate::element::Element;
use crate::error::Result;

/// Flat indices of channel `c`'s values in statistics group `g`: `batch / groups * spatial`
/// of them.
fn channel_indices(shape: &BatchNormShape, g: usize, c: usize) -> impl Iterator<Item = usize> {
    let (channels, spatial) = (shape.channels, shape.spatial);
    let per_group = shape.batch / shape.groups;
    (g * per_group..(g + 1) * per_group).flat_map(move |b| {
        let start = (b * channels + c) * spatial;
        start..start + spatial
    })
}

/// Training-mode forward, per channel and statistics group over its n values: two-pass mean and biased variance,
/// `save_invstd = 1 / sqrt(var + eps)`, `y = (x - mean) * invstd * gamma + beta`, and the
/// running statistics moved by `momentum` towards the mean and the *unbiased* variance
/// (left unchanged when n = 1, where it is undefined). A channel with no values (batch or
/// spatial 0) saves mean 0 and variance 0 and leaves the running statistics alone.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_train<T: Element>(
    shape: &BatchNormShape,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    y: &mut [T],
    save_mean: &mut [T],
    save_invstd: &mut [T],
    running_mean: &mut [T],
    running_var: &mut [T],
) -> Result<()> {
    let n = shape.check_train(
        x,
        gamma,
        beta,
        &*y,
        &*save_mean,
        &*save_invstd,
        &*running_mean,
        &*running_var,
    )?;
    for g in 0..shape.groups {
        let momentum = shape.momentum;
        let moves = shape.moves_running(g);
        for c in 0..shape.channels {
            let at = g * shape.channels + c;
            let count = n as f64;
            let mean = channel_indices(shape, g, c)
                .map(|e| x[e].widen())
                .sum::<f64>()
                / count;
            let var = channel_indices(shape, g, c)
                .map(|e| {
                    let d = x[e].widen() - mean;
                    d * d
                })
                .sum::<f64>()
                / count;
            let invstd = 1.0 / libm::sqrt(var + shape.eps);
            let (scale, shift) = (gamma[c].widen(), beta[c].widen());
            for e in channel_indices(shape, g, c) {
                y[e] = T::from_f64((x[e].widen() - mean) * invstd * scale + shift);
            }
            save_mean[at] = T::from_f64(mean);
            save_invstd[at] = T::from_f64(invstd);
            if !moves {
                continue;
            }
            running_mean[c] =
                T::from_f64((1.0 - momentum) * running_mean[c].widen() + momentum * mean);
            if n > 1 {
                let unbiased = var * count / (count - 1.0);
                running_var[c] =
                    T::from_f64((1.0 - momentum) * running_var[c].widen() + momentum * unbiased);
            }
        }
    }
    Ok(())
}

/// Inference-mode forward with the running statistics:
/// `y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_inference<T: Element>(
    shape: &BatchNormShape,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    running_mean: &[T],
    running_var: &[T],
    y: &mut [T],
) -> Result<()> {
    shape.check_inference(x, gamma, beta, running_mean, running_var, &*y)?;
    let whole = BatchNormShape {
        groups: 1,
        ..*shape
    };
    for c in 0..shape.channels {
        let mean = running_mean[c].widen();
        let invstd = 1.0 / libm::sqrt(running_var[c].widen() + shape.eps);
        let (g, b) = (gamma[c].widen(), beta[c].widen());
        for e in channel_indices(&whole, 0, c) {
            y[e] = T::from_f64((x[e].widen() - mean) * invstd * g + b);
        }
    }
    Ok(())
}

/// Backward of the training forward, with `xhat = (x - save_mean) * save_invstd`:
/// `dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))` (written),
/// `dgamma += sum(dy * xhat)`, `dbeta += sum(dy)`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward<T: Element>(
    shape: &BatchNormShape,
    x: &[T],
    grad_y: &[T],
    gamma: &[T],
    save_mean: &[T],
    save_invstd: &[T],
    grad_x: &mut [T],
    grad_gamma: &mut [T],
    grad_beta: &mut [T],
) -> Result<()> {
    let count = shape.check_backward(
        x,
        grad_y,
        gamma,
        save_mean,
        save_invstd,
        &*grad_x,
        &*grad_gamma,
        &*grad_beta,
    )? as f64;
    for g in 0..shape.groups {
        for c in 0..shape.channels {
            let at = g * shape.channels + c;
            let (mean, invstd) = (save_mean[at].widen(), save_invstd[at].widen());
            let xhat = |e: usize| (x[e].widen() - mean) * invstd;
            let sum_dy: f64 = channel_indices(shape, g, c)
                .map(|e| grad_y[e].widen())
                .sum();
            let sum_dy_xhat: f64 = channel_indices(shape, g, c)
                .map(|e| grad_y[e].widen() * xhat(e))
                .sum();
            grad_gamma[c] = T::from_f64(grad_gamma[c].widen() + sum_dy_xhat);
            grad_beta[c] = T::from_f64(grad_beta[c].widen() + sum_dy);
            let (mean_dy, mean_dy_xhat) = (sum_dy / count, sum_dy_xhat / count);
            let scale = gamma[c].widen() * invstd;
            for e in channel_indices(shape, g, c) {
                grad_x[e] =
                    T::from_f64(scale * (grad_y[e].widen() - mean_dy - xhat(e) * mean_dy_xhat));
            }
        }
    }
    Ok(())
}

impl<T: Element> crate::backend::BatchNormOps for ReferenceBackend<T> {
    fn batch_norm_forward_train(
        &self,
        shape: &BatchNormShape,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        beta: &Self::Buffer,
        y: &mut Self::Buffer,
        save_mean: &mut Self::Buffer,
        save_invstd: &mut Self::Buffer,
        running_mean: &mut Self::Buffer,
        running_var: &mut Self::Buffer,
    ) -> Result<()> {
        batch_norm_forward_train(
            shape,
            x.as_slice(),
            gamma.as_slice(),
            beta.as_slice(),
            y.as_mut_slice(),
            save_mean.as_mut_slice(),
            save_invstd.as_mut_slice(),
            running_mean.as_mut_slice(),
            running_var.as_mut_slice(),
        )
    }

    fn batch_norm_forward_inference(
        &self,
        shape: &BatchNormShape,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        beta: &Self::Buffer,
        running_mean: &Self::Buffer,
        running_var: &Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<()> {
        batch_norm_forward_inference(
            shape,
            x.as_slice(),
            gamma.as_slice(),
            beta.as_slice(),
            running_mean.as_slice(),
            running_var.as_slice(),
            y.as_mut_slice(),
        )
    }

    fn batch_norm_backward(
        &self,
        shape: &BatchNormShape,
        x: &Self::Buffer,
        grad_y: &Self::Buffer,
        gamma: &Self::Buffer,
        save_mean: &Self::Buffer,
        save_invstd: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        grad_gamma: &mut Self::Buffer,
        grad_beta: &mut Self::Buffer,
    ) -> Result<()> {
        batch_norm_backward(
            shape,
            x.as_slice(),
            grad_y.as_slice(),
            gamma.as_slice(),
            save_mean.as_slice(),
            save_invstd.as_slice(),
            grad_x.as_mut_slice(),
            grad_gamma.as_mut_slice(),
            grad_beta.as_mut_slice(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(batch: usize, channels: usize, spatial: usize) -> BatchNormShape {
        BatchNormShape {
            batch,
            channels,
            spatial,
            eps: 1e-5,
            momentum: 0.1,
            groups: 1,
            running_every: 1,
        }
    }

    #[test]
    fn forward_statistics_by_hand() {
        // One channel holding 1, 2, 3, 4 (two images, two positions): mean 2.5, biased
        // variance 1.25, unbiased 5/3.
        let s = shape(2, 1, 2);
        let x = [1.0f64, 2.0, 3.0, 4.0];
        let mut y = [0.0; 4];
        let (mut mean, mut invstd) = ([0.0], [0.0]);
        let (mut running_mean, mut running_var) = ([1.0], [1.0]);
        batch_norm_forward_train(
            &s,
            &x,
            &[2.0],
            &[0.5],
            &mut y,
            &mut mean,
            &mut invstd,
            &mut running_mean,
            &mut running_var,
        )
        .unwrap();
        let expected_invstd = 1.0 / (1.25f64 + 1e-5).sqrt();
        assert_eq!(mean, [2.5]);
        assert!((invstd[0] - expected_invstd).abs() < 1e-15);
        assert!((y[0] - (-1.5 * expected_invstd * 2.0 + 0.5)).abs() < 1e-14);
        assert!((running_mean[0] - (0.9 + 0.25)).abs() < 1e-15);
        assert!((running_var[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-15);
    }

    #[test]
    fn single_value_keeps_running_variance() {
        let s = shape(1, 1, 1);
        let mut y = [0.0f64];
        let (mut mean, mut invstd) = ([0.0], [0.0]);
        let (mut running_mean, mut running_var) = ([0.0], [3.0]);
        batch_norm_forward_train(
            &s,
            &[4.0],
            &[1.0],
            &[0.0],
            &mut y,
            &mut mean,
            &mut invstd,
            &mut running_mean,
            &mut running_var,
        )
        .unwrap();
        assert_eq!(y, [0.0]);
        assert_eq!(running_var, [3.0]);
        assert!((running_mean[0] - 0.4).abs() < 1e-15);
    }

    #[test]
    fn backward_of_a_constant_gradient_is_zero() {
        // A uniform dy shifts every output equally, which normalisation cancels: dx = 0.
        let s = shape(1, 1, 3);
        let x = [1.0f64, 2.0, 4.0];
        let mut dx = [9.0; 3];
        let (mut dgamma, mut dbeta) = ([1.0], [1.0]);
        batch_norm_backward(
            &s,
            &x,
            &[0.5; 3],
            &[3.0],
            &[7.0 / 3.0],
            &[0.8],
            &mut dx,
            &mut dgamma,
            &mut dbeta,
        )
        .unwrap();
        assert!(dx.iter().all(|v| v.abs() < 1e-15));
        assert!((dbeta[0] - 2.5).abs() < 1e-15);
        assert!((dgamma[0] - 1.0).abs() < 1e-15);
        assert!(batch_norm_backward(
            &s,
            &x,
            &[0.5; 2],
            &[3.0],
            &[0.0],
            &[1.0],
            &mut dx,
            &mut dgamma,
            &mut dbeta,
        )
        .is_err());
    }

    #[test]
    fn inference_uses_running_statistics() {
        let s = shape(1, 2, 1);
        let mut y = [0.0f64; 2];
        batch_norm_forward_inference(
            &s,
            &[3.0, 3.0],
            &[1.0, 2.0],
            &[0.0, 1.0],
            &[1.0, 3.0],
            &[4.0 - 1e-5, 1.0],
            &mut y,
        )
        .unwrap();
        assert!((y[0] - 1.0).abs() < 1e-12);
        assert!((y[1] - 1.0).abs() < 1e-12);
    }
}
