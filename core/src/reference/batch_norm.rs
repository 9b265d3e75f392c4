//! Batch normalisation over `[batch, channels, spatial]`: training forward (batch statistics,
//! running-statistics update), inference forward, and the training backward.

use super::{ReferenceBackend, ReferenceBuffer};
use crate::backend::batch_norm::{
    BnBackward, BnBackwardBuffers, BnInference, BnInferenceBuffers, BnTrain, BnTrainBuffers,
};
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
pub fn batch_norm_forward_train<T: Element>(
    shape: &BatchNormShape,
    io: BnTrain<&[T], &mut [T]>,
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
pub fn batch_norm_forward_inference<T: Element>(
    shape: &BatchNormShape,
    io: BnInference<&[T], &mut [T]>,
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
pub fn batch_norm_backward<T: Element>(
    shape: &BatchNormShape,
    io: BnBackward<&[T], &mut [T]>,
) -> Result<()> {
    let count = shape.check_backward(&io)? as f64;
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
        io: BnTrainBuffers<'_, Self>,
    ) -> Result<()> {
        batch_norm_forward_train(
            shape,
            io.map(ReferenceBuffer::as_slice, ReferenceBuffer::as_mut_slice),
        )
    }

    fn batch_norm_forward_inference(
        &self,
        shape: &BatchNormShape,
        io: BnInferenceBuffers<'_, Self>,
    ) -> Result<()> {
        batch_norm_forward_inference(
            shape,
            io.map(ReferenceBuffer::as_slice, ReferenceBuffer::as_mut_slice),
        )
    }

    fn batch_norm_backward(
        &self,
        shape: &BatchNormShape,
        io: BnBackwardBuffers<'_, Self>,
    ) -> Result<()> {
        batch_norm_backward(
            shape,
            io.map(ReferenceBuffer::as_slice, ReferenceBuffer::as_mut_slice),
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
            BnTrain {
                x: &x,
                gamma: &[2.0],
                beta: &[0.5],
                y: &mut y,
                save_mean: &mut mean,
                save_invstd: &mut invstd,
                running_mean: &mut running_mean,
                running_var: &mut running_var,
            },
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
            BnTrain {
                x: &[4.0],
                gamma: &[1.0],
                beta: &[0.0],
                y: &mut y,
                save_mean: &mut mean,
                save_invstd: &mut invstd,
                running_mean: &mut running_mean,
                running_var: &mut running_var,
            },
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
            BnBackward {
                x: &x,
                grad_y: &[0.5; 3],
                gamma: &[3.0],
                save_mean: &[7.0 / 3.0],
                save_invstd: &[0.8],
                grad_x: &mut dx,
                grad_gamma: &mut dgamma,
                grad_beta: &mut dbeta,
            },
        )
        .unwrap();
        assert!(dx.iter().all(|v| v.abs() < 1e-15));
        assert!((dbeta[0] - 2.5).abs() < 1e-15);
        assert!((dgamma[0] - 1.0).abs() < 1e-15);
        assert!(batch_norm_backward(
            &s,
            BnBackward {
                x: &x,
                grad_y: &[0.5; 2],
                gamma: &[3.0],
                save_mean: &[0.0],
                save_invstd: &[1.0],
                grad_x: &mut dx,
                grad_gamma: &mut dgamma,
                grad_beta: &mut dbeta
            }
        )
        .is_err());
    }

    #[test]
    fn inference_uses_running_statistics() {
        let s = shape(1, 2, 1);
        let mut y = [0.0f64; 2];
        batch_norm_forward_inference(
            &s,
            BnInference {
                x: &[3.0, 3.0],
                gamma: &[1.0, 2.0],
                beta: &[0.0, 1.0],
                running_mean: &[1.0, 3.0],
                running_var: &[4.0 - 1e-5, 1.0],
                y: &mut y,
            },
        )
        .unwrap();
        assert!((y[0] - 1.0).abs() < 1e-12);
        assert!((y[1] - 1.0).abs() < 1e-12);
    }
}
