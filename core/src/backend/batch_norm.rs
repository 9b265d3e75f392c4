//! Batch normalisation: training mode per statistics group (shuffle BN), inference mode,
//! and the backward of the training mode.

use super::product;
use super::{BufferLen, MemoryOps};
use crate::error::{check_len, ensure, Result};

named_buffers! {
    /// The buffers of [`BatchNormOps::batch_norm_forward_train`] by name: named fields where
    /// eight positional buffers of one type could be swapped unnoticed.
    BnTrain, BnTrainBuffers {
        read: [x, gamma, beta],
        write: [y, save_mean, save_invstd, running_mean, running_var],
    }
}

named_buffers! {
    /// The buffers of [`BatchNormOps::batch_norm_forward_inference`] by name.
    BnInference, BnInferenceBuffers {
        read: [x, gamma, beta, running_mean, running_var],
        write: [y],
    }
}

named_buffers! {
    /// The buffers of [`BatchNormOps::batch_norm_backward`] by name.
    BnBackward, BnBackwardBuffers {
        read: [x, grad_y, gamma, save_mean, save_invstd],
        write: [grad_x, grad_gamma, grad_beta],
    }
}

/// Batch normalisation over `[batch, channels, spatial]` (spatial = H*W), per channel and per
/// statistics group.
///
/// The batch is `groups` consecutive blocks of `batch / groups` items, each normalised by its
/// own statistics: exactly `groups` separate calls on the blocks, in block order. This is how
/// data-parallel replicas without synchronised batch norm see a batch (each GPU of the official
/// DSCL run normalises its own 128 images), and how the official code's separate crop passes
/// (one per crop set) see the crops. Saved statistics are group-major: group g's channel c at
/// `g * channels + c`. The running statistics move once for each group whose index is a multiple of
/// `running_every`, in group order, and the other groups leave them bit for bit unchanged.
/// With `running_every = 1` every group moves them (C crop passes move them C times); with
/// `running_every = R` only the groups of replica 0 do, whose buffers are the ones PyTorch's
/// DistributedDataParallel broadcasts to every replica at each forward.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormShape {
    pub batch: usize,
    pub channels: usize,
    pub spatial: usize,
    /// Added to the variance before the square root (PyTorch default 1e-5).
    pub eps: f64,
    /// Running-statistics momentum (PyTorch convention: new = (1 - momentum) * old +
    /// momentum * batch; default 0.1).
    pub momentum: f64,
    /// Statistics groups (1: one set of statistics over the whole batch); divides `batch`.
    pub groups: usize,
    /// The groups whose index is a multiple of this move the running statistics (at least 1).
    pub running_every: usize,
}

/// One statistics group of a batch-norm call ([`BatchNormShape::group_spans`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpan {
    /// The group's block of the data buffers (x, y, their gradients).
    pub data: core::ops::Range<usize>,
    /// The group's saved mean and inverse std.
    pub saved: core::ops::Range<usize>,
    /// Whether the group moves the running statistics.
    pub moves_running: bool,
}

impl BatchNormShape {
    pub fn len(&self) -> usize {
        product(&[self.batch, self.channels, self.spatial])
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// One statistics group: the same channels and spatial size over `batch / groups` items.
    pub fn group(&self) -> BatchNormShape {
        BatchNormShape {
            batch: self.batch / self.groups.max(1),
            groups: 1,
            running_every: 1,
            ..*self
        }
    }
    /// Whether group `g` moves the running statistics.
    pub fn moves_running(&self, g: usize) -> bool {
        g.is_multiple_of(self.running_every.max(1))
    }
    /// Each statistics group's place in the call's buffers, in group order.
    pub fn group_spans(&self) -> impl Iterator<Item = GroupSpan> + '_ {
        let (data, saved) = (self.group().len(), self.channels);
        (0..self.groups).map(move |g| GroupSpan {
            data: g * data..(g + 1) * data,
            saved: g * saved..(g + 1) * saved,
            moves_running: self.moves_running(g),
        })
    }
    /// Length of the saved mean and inverse-std buffers: one value per group and channel.
    pub fn saved_len(&self) -> usize {
        self.groups.saturating_mul(self.channels)
    }
    pub fn check(&self, data_len: usize, channel_len: usize) -> Result<()> {
        ensure(
            self.eps > 0.0 && self.eps.is_finite(),
            "batch_norm",
            "eps must be positive",
        )?;
        ensure(
            (0.0..=1.0).contains(&self.momentum),
            "batch_norm",
            "momentum must lie in [0, 1]",
        )?;
        ensure(
            self.groups >= 1 && self.batch.is_multiple_of(self.groups),
            "batch_norm",
            "the statistics groups must be at least 1 and divide the batch",
        )?;
        ensure(
            self.running_every >= 1,
            "batch_norm",
            "running_every must be at least 1",
        )?;
        check_len("batch_norm data", data_len, self.len())?;
        check_len("batch_norm per-channel", channel_len, self.channels)
    }

    /// Checks the descriptor and the buffers of a training-mode forward; returns n = batch /
    /// groups * spatial, the values per channel and group.
    pub fn check_train<R: BufferLen, W: BufferLen>(&self, io: &BnTrain<R, W>) -> Result<usize> {
        self.check_buffers(
            &[("batch_norm x", io.x.len()), ("batch_norm y", io.y.len())],
            &[
                ("batch_norm gamma", io.gamma.len()),
                ("batch_norm beta", io.beta.len()),
                ("batch_norm running_mean", io.running_mean.len()),
                ("batch_norm running_var", io.running_var.len()),
            ],
            &[
                ("batch_norm save_mean", io.save_mean.len()),
                ("batch_norm save_invstd", io.save_invstd.len()),
            ],
        )?;
        self.values_per_group()
    }

    /// Checks the descriptor and the buffers of an inference-mode forward.
    pub fn check_inference<R: BufferLen, W: BufferLen>(
        &self,
        io: &BnInference<R, W>,
    ) -> Result<()> {
        self.check_buffers(
            &[("batch_norm x", io.x.len()), ("batch_norm y", io.y.len())],
            &[
                ("batch_norm gamma", io.gamma.len()),
                ("batch_norm beta", io.beta.len()),
                ("batch_norm running_mean", io.running_mean.len()),
                ("batch_norm running_var", io.running_var.len()),
            ],
            &[],
        )
    }

    /// Checks the descriptor and the buffers of the backward; returns n as
    /// [`Self::check_train`].
    pub fn check_backward<R: BufferLen, W: BufferLen>(
        &self,
        io: &BnBackward<R, W>,
    ) -> Result<usize> {
        self.check_buffers(
            &[
                ("batch_norm x", io.x.len()),
                ("batch_norm grad_y", io.grad_y.len()),
                ("batch_norm grad_x", io.grad_x.len()),
            ],
            &[
                ("batch_norm gamma", io.gamma.len()),
                ("batch_norm grad_gamma", io.grad_gamma.len()),
                ("batch_norm grad_beta", io.grad_beta.len()),
            ],
            &[
                ("batch_norm save_mean", io.save_mean.len()),
                ("batch_norm save_invstd", io.save_invstd.len()),
            ],
        )?;
        self.values_per_group()
    }

    /// The descriptor and every buffer of one call: `data` buffers (named for the error) hold
    /// the whole tensor, `channel` buffers one value per channel, `saved` buffers one per group
    /// and channel ([`Self::saved_len`]).
    fn check_buffers(
        &self,
        data: &[(&'static str, usize)],
        channel: &[(&'static str, usize)],
        saved: &[(&'static str, usize)],
    ) -> Result<()> {
        let first = |list: &[(&'static str, usize)]| list.first().map_or(0, |&(_, l)| l);
        self.check(first(data), first(channel))?;
        for &(what, l) in data {
            check_len(what, l, self.len())?;
        }
        for &(what, l) in channel {
            check_len(what, l, self.channels)?;
        }
        for &(what, l) in saved {
            check_len(what, l, self.saved_len())?;
        }
        Ok(())
    }

    /// n = batch / groups * spatial, the values per channel and group: at least one where
    /// there are channels, since batch statistics of no values do not exist.
    fn values_per_group(&self) -> Result<usize> {
        let n = (self.batch / self.groups).saturating_mul(self.spatial);
        ensure(
            n >= 1 || self.channels == 0,
            "batch_norm",
            "each channel needs at least one value",
        )?;
        Ok(n)
    }
}

pub trait BatchNormOps: MemoryOps {
    /// Training-mode batch norm, per statistics group as [`BatchNormShape`] describes (each
    /// group exactly one call on its block; saved statistics group-major; the running
    /// statistics moved by the groups `shape.moves_running` names, in order, and left bit for
    /// bit alone by the others). Per channel c over n = batch / groups * spatial values:
    /// `mean_c`, biased `var_c`; `save_invstd_c = 1 / sqrt(var_c + eps)`;
    /// `y = (x - mean_c) * save_invstd_c * gamma_c + beta_c`;
    /// `running_mean = (1 - momentum) * running_mean + momentum * mean_c`;
    /// `running_var = (1 - momentum) * running_var + momentum * var_c * n / (n - 1)`
    /// (unbiased; when n = 1 the running variance is left unchanged).
    fn batch_norm_forward_train(
        &self,
        shape: &BatchNormShape,
        io: BnTrainBuffers<'_, Self>,
    ) -> Result<()>;

    /// Inference-mode batch norm:
    /// `y = (x - running_mean_c) / sqrt(running_var_c + eps) * gamma_c + beta_c`.
    fn batch_norm_forward_inference(
        &self,
        shape: &BatchNormShape,
        io: BnInferenceBuffers<'_, Self>,
    ) -> Result<()>;

    /// Backward of the training-mode forward (batch statistics depend on x), per statistics
    /// group with that group's saved statistics: with `xhat = (x - mean) * invstd`,
    /// `dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))` (means over the
    /// channel's n values in the group), written; `dgamma += sum(dy * xhat)`, `dbeta +=
    /// sum(dy)`, accumulated group by group in group order.
    fn batch_norm_backward(
        &self,
        shape: &BatchNormShape,
        io: BnBackwardBuffers<'_, Self>,
    ) -> Result<()>;
}
