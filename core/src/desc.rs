//! Shape descriptors of the Backend kernels, with the buffer sizes each needs.
//!
//! Every backend validates its arguments through these (`check` methods) before launching, so
//! shape errors are the same, with the same messages, on every device.
//! Layouts are row-major; images are NCHW; convolution weights are `[out, in, kh, kw]`.

use crate::backend::BufferLen;
use crate::error::{check_len, ensure, Result};

/// Where one matrix operand lives inside a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MatrixLayout {
    /// Element offset of the first matrix of the batch.
    pub offset: usize,
    /// Leading dimension: elements between the starts of consecutive rows as stored.
    pub ld: usize,
    /// Elements between consecutive matrices of a strided batch (ignored when batch = 1).
    pub batch_stride: usize,
}

impl MatrixLayout {
    /// A dense matrix stored from the buffer's start with `ld` elements per stored row.
    pub const fn dense(ld: usize) -> Self {
        MatrixLayout {
            offset: 0,
            ld,
            batch_stride: 0,
        }
    }
    pub const fn at(offset: usize, ld: usize) -> Self {
        MatrixLayout {
            offset,
            ld,
            batch_stride: 0,
        }
    }
    pub const fn strided(offset: usize, ld: usize, batch_stride: usize) -> Self {
        MatrixLayout {
            offset,
            ld,
            batch_stride,
        }
    }

    /// Elements the buffer must hold for `batch` matrices of `rows` x `cols` as stored
    /// (`offset` included; 0 when any of them is 0).
    pub fn required_len(&self, batch: usize, rows: usize, cols: usize) -> usize {
        if batch == 0 || rows == 0 || cols == 0 {
            return 0;
        }
        self.offset
            .saturating_add((batch - 1).saturating_mul(self.batch_stride))
            .saturating_add((rows - 1).saturating_mul(self.ld))
            .saturating_add(cols)
    }
}

/// A (strided-batched) general matrix product, row-major:
/// for every `t < batch`, `C_t = alpha * op(A_t) * op(B_t) + beta * C_t`, where `op(A_t)` is
/// m x k, `op(B_t)` is k x n and `C_t` is m x n.
/// `op(A)[i][p] = A[a.offset + t*a.batch_stride + i*a.ld + p]` when `!trans_a`, and
/// `A[a.offset + t*a.batch_stride + p*a.ld + i]` when `trans_a` (likewise for B).
/// When `beta == 0`, C is written without being read (a NaN already in C does not propagate).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmDesc {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f64,
    pub beta: f64,
    pub batch: usize,
    pub a: MatrixLayout,
    pub b: MatrixLayout,
    pub c: MatrixLayout,
}

impl GemmDesc {
    /// A single dense product `C = op(A) op(B)` with tight leading dimensions.
    pub fn new(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> Self {
        GemmDesc {
            m,
            n,
            k,
            trans_a,
            trans_b,
            alpha: 1.0,
            beta: 0.0,
            batch: 1,
            a: MatrixLayout::dense(if trans_a { m } else { k }),
            b: MatrixLayout::dense(if trans_b { k } else { n }),
            c: MatrixLayout::dense(n),
        }
    }
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }
    pub fn beta(mut self, beta: f64) -> Self {
        self.beta = beta;
        self
    }

    /// Stored (rows, cols) of A and B.
    pub fn a_stored(&self) -> (usize, usize) {
        if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        }
    }
    pub fn b_stored(&self) -> (usize, usize) {
        if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        }
    }

    /// Checks leading dimensions and that the buffers hold every element addressed.
    pub fn check(&self, a_len: usize, b_len: usize, c_len: usize) -> Result<()> {
        let (ar, ac) = self.a_stored();
        let (br, bc) = self.b_stored();
        ensure(
            ar <= 1 || self.a.ld >= ac,
            "gemm A",
            "leading dimension smaller than the stored row",
        )?;
        ensure(
            br <= 1 || self.b.ld >= bc,
            "gemm B",
            "leading dimension smaller than the stored row",
        )?;
        ensure(
            self.m <= 1 || self.c.ld >= self.n,
            "gemm C",
            "leading dimension smaller than n",
        )?;
        ensure(
            self.alpha.is_finite() && self.beta.is_finite(),
            "gemm",
            "alpha and beta must be finite",
        )?;
        check_len("gemm A", a_len, self.a.required_len(self.batch, ar, ac))?;
        check_len("gemm B", b_len, self.b.required_len(self.batch, br, bc))?;
        check_len(
            "gemm C",
            c_len,
            self.c.required_len(self.batch, self.m, self.n),
        )
    }

    /// Multiply-adds performed: `batch * m * n * k`.
    pub fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

/// A 2-D convolution without bias or groups, dilation 1, the same stride and zero padding on
/// both axes. Input `[batch, in_channels, in_height, in_width]`, weight
/// `[out_channels, in_channels, kernel_h, kernel_w]`, output
/// `[batch, out_channels, out_height, out_width]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    pub batch: usize,
    pub in_channels: usize,
    pub in_height: usize,
    pub in_width: usize,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2dShape {
    pub fn out_height(&self) -> usize {
        out_extent(self.in_height, self.padding, self.kernel_h, self.stride)
    }
    pub fn out_width(&self) -> usize {
        out_extent(self.in_width, self.padding, self.kernel_w, self.stride)
    }
    pub fn input_len(&self) -> usize {
        product(&[self.batch, self.in_channels, self.in_height, self.in_width])
    }
    pub fn weight_len(&self) -> usize {
        product(&[
            self.out_channels,
            self.in_channels,
            self.kernel_h,
            self.kernel_w,
        ])
    }
    pub fn output_len(&self) -> usize {
        product(&[
            self.batch,
            self.out_channels,
            self.out_height(),
            self.out_width(),
        ])
    }
    pub fn check_shape(&self) -> Result<()> {
        ensure(self.stride >= 1, "conv2d", "stride must be at least 1")?;
        ensure(
            self.kernel_h >= 1 && self.kernel_w >= 1,
            "conv2d",
            "kernel must be at least 1x1",
        )?;
        ensure(
            padded(self.in_height, self.padding) >= self.kernel_h
                && padded(self.in_width, self.padding) >= self.kernel_w,
            "conv2d",
            "kernel larger than the padded input",
        )?;
        ensure(
            self.padding < self.kernel_h && self.padding < self.kernel_w,
            "conv2d",
            "padding must be smaller than the kernel",
        )
    }
    /// Checks input, weight and output buffer sizes (in either direction of the pass).
    pub fn check(&self, input_len: usize, weight_len: usize, output_len: usize) -> Result<()> {
        self.check_shape()?;
        check_len("conv2d input", input_len, self.input_len())?;
        check_len("conv2d weight", weight_len, self.weight_len())?;
        check_len("conv2d output", output_len, self.output_len())
    }
    /// Multiply-adds of the forward pass, times two.
    pub fn flops(&self) -> f64 {
        2.0 * self.output_len() as f64
            * self.in_channels as f64
            * self.kernel_h as f64
            * self.kernel_w as f64
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

    /// Checks the descriptor and the buffers of a training-mode forward, in the trait's
    /// argument order; returns n = batch / groups * spatial, the values per channel and group.
    #[allow(clippy::too_many_arguments)]
    pub fn check_train<B: BufferLen + ?Sized>(
        &self,
        x: &B,
        gamma: &B,
        beta: &B,
        y: &B,
        save_mean: &B,
        save_invstd: &B,
        running_mean: &B,
        running_var: &B,
    ) -> Result<usize> {
        self.check_buffers(
            &[("batch_norm x", x.len()), ("batch_norm y", y.len())],
            &[
                ("batch_norm gamma", gamma.len()),
                ("batch_norm beta", beta.len()),
                ("batch_norm running_mean", running_mean.len()),
                ("batch_norm running_var", running_var.len()),
            ],
            &[
                ("batch_norm save_mean", save_mean.len()),
                ("batch_norm save_invstd", save_invstd.len()),
            ],
        )?;
        self.values_per_group()
    }

    /// Checks the descriptor and the buffers of an inference-mode forward, in the trait's
    /// argument order.
    pub fn check_inference<B: BufferLen + ?Sized>(
        &self,
        x: &B,
        gamma: &B,
        beta: &B,
        running_mean: &B,
        running_var: &B,
        y: &B,
    ) -> Result<()> {
        self.check_buffers(
            &[("batch_norm x", x.len()), ("batch_norm y", y.len())],
            &[
                ("batch_norm gamma", gamma.len()),
                ("batch_norm beta", beta.len()),
                ("batch_norm running_mean", running_mean.len()),
                ("batch_norm running_var", running_var.len()),
            ],
            &[],
        )
    }

    /// Checks the descriptor and the buffers of the backward, in the trait's argument order;
    /// returns n as [`Self::check_train`].
    #[allow(clippy::too_many_arguments)]
    pub fn check_backward<B: BufferLen + ?Sized>(
        &self,
        x: &B,
        grad_y: &B,
        gamma: &B,
        save_mean: &B,
        save_invstd: &B,
        grad_x: &B,
        grad_gamma: &B,
        grad_beta: &B,
    ) -> Result<usize> {
        self.check_buffers(
            &[
                ("batch_norm x", x.len()),
                ("batch_norm grad_y", grad_y.len()),
                ("batch_norm grad_x", grad_x.len()),
            ],
            &[
                ("batch_norm gamma", gamma.len()),
                ("batch_norm grad_gamma", grad_gamma.len()),
                ("batch_norm grad_beta", grad_beta.len()),
            ],
            &[
                ("batch_norm save_mean", save_mean.len()),
                ("batch_norm save_invstd", save_invstd.len()),
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

/// Checks the buffers of global average pooling over `[batch, channels, spatial]` (`x` that
/// long, `y` one value per plane); returns (planes, elements of x).
pub fn check_global_pool(
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

/// Max pooling over NCHW with a square window, the same stride and padding on both axes;
/// padded positions are never selected (they count as -infinity), as in PyTorch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub batch: usize,
    pub channels: usize,
    pub in_height: usize,
    pub in_width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl PoolShape {
    pub fn out_height(&self) -> usize {
        out_extent(self.in_height, self.padding, self.kernel, self.stride)
    }
    pub fn out_width(&self) -> usize {
        out_extent(self.in_width, self.padding, self.kernel, self.stride)
    }
    pub fn input_len(&self) -> usize {
        product(&[self.batch, self.channels, self.in_height, self.in_width])
    }
    pub fn output_len(&self) -> usize {
        product(&[
            self.batch,
            self.channels,
            self.out_height(),
            self.out_width(),
        ])
    }
    pub fn check(&self, input_len: usize, output_len: usize, argmax_len: usize) -> Result<()> {
        ensure(
            self.stride >= 1 && self.kernel >= 1,
            "max_pool2d",
            "kernel and stride must be at least 1",
        )?;
        ensure(
            self.padding <= self.kernel / 2,
            "max_pool2d",
            "padding must be at most half the kernel",
        )?;
        ensure(
            padded(self.in_height, self.padding) >= self.kernel
                && padded(self.in_width, self.padding) >= self.kernel,
            "max_pool2d",
            "kernel larger than the padded input",
        )?;
        check_len("max_pool2d input", input_len, self.input_len())?;
        check_len("max_pool2d output", output_len, self.output_len())?;
        check_len("max_pool2d argmax", argmax_len, self.output_len())
    }
}

/// ROI-align (torchvision `roi_align`) over features `[batch, channels, height, width]`.
/// Boxes are rows of 5 values `(batch_index, x1, y1, x2, y2)` in input-image pixels;
/// output is `[num_rois, channels, pooled_h, pooled_w]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoiAlignShape {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub num_rois: usize,
    pub pooled_h: usize,
    pub pooled_w: usize,
    /// Multiplies box coordinates into feature-map coordinates (1 / backbone stride).
    pub spatial_scale: f64,
    /// Sampling points per bin along each axis; 0 = adaptive: ceil(roi size / pooled size).
    pub sampling_ratio: usize,
    /// `true` shifts box coordinates by -0.5 pixel (torchvision `aligned=True`); DSCL uses
    /// `false`, where a box is also at least 1x1 feature cell.
    pub aligned: bool,
}

impl RoiAlignShape {
    pub fn features_len(&self) -> usize {
        product(&[self.batch, self.channels, self.height, self.width])
    }
    pub fn boxes_len(&self) -> usize {
        self.num_rois.saturating_mul(5)
    }
    pub fn output_len(&self) -> usize {
        product(&[self.num_rois, self.channels, self.pooled_h, self.pooled_w])
    }
    pub fn check(&self, features_len: usize, boxes_len: usize, output_len: usize) -> Result<()> {
        ensure(
            self.pooled_h >= 1 && self.pooled_w >= 1,
            "roi_align",
            "pooled size must be at least 1x1",
        )?;
        ensure(
            self.spatial_scale > 0.0 && self.spatial_scale.is_finite(),
            "roi_align",
            "spatial_scale must be positive",
        )?;
        check_len("roi_align features", features_len, self.features_len())?;
        check_len("roi_align boxes", boxes_len, self.boxes_len())?;
        check_len("roi_align output", output_len, self.output_len())
    }
}

/// Row-wise operation over a `rows x cols` row-major matrix of which only the first
/// `valid_cols` columns take part (the rest are masked: unfilled queue slots).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowsDesc {
    pub rows: usize,
    /// Row stride (elements per stored row).
    pub cols: usize,
    /// Columns `valid_cols..cols` are ignored and, where the kernel writes a full row, set to 0.
    pub valid_cols: usize,
}

impl RowsDesc {
    pub fn new(rows: usize, cols: usize) -> Self {
        RowsDesc {
            rows,
            cols,
            valid_cols: cols,
        }
    }
    pub fn len(&self) -> usize {
        self.rows.saturating_mul(self.cols)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn check(&self, what: &'static str, matrix_len: usize) -> Result<()> {
        ensure(
            self.valid_cols <= self.cols,
            what,
            "valid_cols exceeds cols",
        )?;
        ensure(
            self.valid_cols >= 1 || self.rows == 0,
            what,
            "a row needs at least one valid column",
        )?;
        check_len(what, matrix_len, self.len())
    }
}

/// How the positives of an anchor are weighted in the supervised contrastive loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PositiveWeighting {
    /// SupCon: weight 1 on every positive.
    SupCon,
    /// DSCL: weight 1 on the augmented view (column `batch + i`) and `beta / (|P(i)| - 1)` on
    /// each other positive.
    Decoupled { beta: f64 },
}

/// One block of anchors of the supervised contrastive loss (SupCon or DSCL), on logits
/// already computed as `s_ij = q_i . z_j / tau`, where `z` is the contrast set `[Q; K; U]`.
/// Anchor `i = row_offset + r` (for block row r) is also column `i` of the contrast set (its
/// self column, excluded everywhere), and its augmented view is column `batch + i`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ContrastiveRowsDesc {
    /// Anchors in this block, and the rows of the logits block.
    pub rows: usize,
    /// Global index of the block's first anchor.
    pub row_offset: usize,
    /// B: the number of anchors in the whole batch.
    pub batch: usize,
    /// Row stride of the logits block and length of the contrast labels (N = 2B + K).
    pub cols: usize,
    /// Columns `valid_cols..cols` are masked (unfilled queue entries): excluded from numerator
    /// and denominator, and their gradient is 0.
    pub valid_cols: usize,
    /// Labels must lie in `0..num_classes`; others are a fault.
    pub num_classes: u32,
    pub weighting: PositiveWeighting,
    /// The gradient written is `grad_scale * dL_i/ds_ij` (1/B for a mean over anchors).
    pub grad_scale: f64,
}

impl ContrastiveRowsDesc {
    pub fn check(&self, logits_len: usize, labels_len: usize, loss_len: usize) -> Result<()> {
        ensure(
            self.valid_cols <= self.cols,
            "contrastive_rows",
            "valid_cols exceeds cols",
        )?;
        ensure(
            self.row_offset.saturating_add(self.rows) <= self.batch,
            "contrastive_rows",
            "anchor block extends past the batch",
        )?;
        ensure(
            self.batch.saturating_mul(2) <= self.valid_cols,
            "contrastive_rows",
            "the contrast set must start with the B queries and B keys",
        )?;
        if let PositiveWeighting::Decoupled { beta } = self.weighting {
            ensure(
                beta >= 0.0 && beta.is_finite(),
                "contrastive_rows",
                "beta must be finite and non-negative",
            )?;
        }
        check_len(
            "contrastive_rows logits",
            logits_len,
            self.rows.saturating_mul(self.cols),
        )?;
        check_len("contrastive_rows labels", labels_len, self.cols)?;
        check_len(
            "contrastive_rows loss",
            loss_len,
            self.row_offset.saturating_add(self.rows),
        )
    }
}

/// SGD with momentum and weight decay, PyTorch semantics (`torch.optim.SGD`):
/// `g = grad + weight_decay * p`; on the first step `v = g`, afterwards
/// `v = momentum * v + (1 - dampening) * g`; the step direction is `g + momentum * v` when
/// `nesterov`, else `v`; `p -= lr * direction`. With `momentum == 0` there is no velocity
/// (it is left untouched) and the direction is `g`, as in PyTorch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdParams {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub dampening: f64,
    pub nesterov: bool,
    /// True on the optimizer's first step, when the velocity is initialised to `g`.
    pub first_step: bool,
}

impl SgdParams {
    pub fn check(&self) -> Result<()> {
        ensure(
            self.lr.is_finite() && self.lr >= 0.0,
            "sgd",
            "learning rate must be finite and non-negative",
        )?;
        ensure(
            self.momentum.is_finite() && self.momentum >= 0.0,
            "sgd",
            "momentum must be finite and non-negative",
        )?;
        ensure(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "sgd",
            "weight decay must be finite and non-negative",
        )?;
        ensure(
            self.dampening.is_finite(),
            "sgd",
            "dampening must be finite",
        )?;
        ensure(
            !self.nesterov || (self.momentum > 0.0 && self.dampening == 0.0),
            "sgd",
            "Nesterov momentum requires a momentum and zero dampening",
        )
    }
}

/// A product of dimensions that saturates instead of overflowing: an absurd shape then needs a
/// buffer no backend has, and the size check refuses it.
fn product(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |acc, &d| acc.saturating_mul(d))
}

fn padded(extent: usize, padding: usize) -> usize {
    extent.saturating_add(padding.saturating_mul(2))
}

/// Output extent of a sliding window: `(extent + 2 * padding - kernel) / stride + 1`.
fn out_extent(extent: usize, padding: usize, kernel: usize, stride: usize) -> usize {
    padded(extent, padding).saturating_sub(kernel) / stride.max(1) + 1
}
