//! The seam: one trait that every device implements. One method is one kernel launch.
//!
//! Conventions shared by every method:
//! - Buffers belong to the backend. Arguments are checked on the host against the descriptor
//!   (`desc` module) before anything runs; a buffer may be longer than needed, never shorter.
//!   Shape errors are returned as `Error::ShapeMismatch` / `Error::InvalidArgument`.
//! - Errors in *values* (NaN, zero-norm rows, labels out of range) are recorded by the kernel
//!   in the backend's fault slot and read with [`Backend::take_fault`] (or together with a
//!   download, [`Backend::download_with_fault`]), so a device needs no host round trip per
//!   kernel. Each method's doc says which faults it records.
//! - Outputs are written (`=`) unless the doc says they accumulate (`+=`). Parameter-gradient
//!   outputs (`conv2d_backward_filter`, `batch_norm_backward`'s dgamma/dbeta, `bias_backward`)
//!   and `roi_align_backward` accumulate, so one gradient set can collect several passes.
//! - Scalars are passed as f64 and converted to the element type by the backend.
//! - Integer buffers hold `u32` (labels, max-pool argmax).
//! - Output buffers never alias inputs: the borrow checker enforces it.

use crate::desc::{
    BatchNormShape, ContrastiveRowsDesc, Conv2dShape, GemmDesc, PoolShape, RoiAlignShape, RowsDesc,
    SgdParams,
};
use crate::element::Element;
use crate::error::{Fault, Result};

/// A backend buffer reports its length in elements.
pub trait BufferLen {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub trait Backend {
    /// The floating-point type buffers hold and kernels compute in.
    type Elem: Element;
    /// A buffer of `Elem` on the device.
    type Buffer: BufferLen;
    /// A buffer of `u32` on the device.
    type IndexBuffer: BufferLen;

    /// Human-readable device name (adapter name, GPU model, "cpu (2 threads)").
    fn device_name(&self) -> &str;

    // ---- memory ----------------------------------------------------------------------------

    /// A new buffer of `len` elements, zero-filled. `Error::OutOfMemory` when it does not fit.
    fn alloc(&self, len: usize) -> Result<Self::Buffer>;
    /// A new integer buffer of `len` elements, zero-filled.
    fn alloc_index(&self, len: usize) -> Result<Self::IndexBuffer>;
    /// Copies `src` into `dst[offset..offset + src.len()]`.
    fn upload(&self, dst: &mut Self::Buffer, offset: usize, src: &[Self::Elem]) -> Result<()>;
    /// Copies `src[offset..offset + dst.len()]` into `dst`; waits for pending work.
    fn download(&self, src: &Self::Buffer, offset: usize, dst: &mut [Self::Elem]) -> Result<()>;
    /// Copies `src` into `dst[offset..offset + src.len()]`.
    fn upload_index(&self, dst: &mut Self::IndexBuffer, offset: usize, src: &[u32]) -> Result<()>;
    /// Copies `src[offset..offset + dst.len()]` into `dst`; waits for pending work.
    fn download_index(&self, src: &Self::IndexBuffer, offset: usize, dst: &mut [u32])
        -> Result<()>;

    /// Returns the first value fault recorded since the last call, and clears it. On a device
    /// this waits for pending work.
    fn take_fault(&self) -> Result<Option<Fault>>;

    /// [`Self::download`] and [`Self::take_fault`] in one wait for the device: copies
    /// `src[offset..offset + dst.len()]` into `dst`, then returns and clears the first fault
    /// recorded by the work queued before the call. A training step makes this its one read
    /// (its losses, their gradient probes and the fault slot together).
    ///
    /// The default does the two in turn, which is exact for a host backend and costs a device
    /// only a second copy from an idle queue; a device that can bring the slot back with the
    /// data overrides it.
    fn download_with_fault(
        &self,
        src: &Self::Buffer,
        offset: usize,
        dst: &mut [Self::Elem],
    ) -> Result<Option<Fault>> {
        self.download(src, offset, dst)?;
        self.take_fault()
    }

    // ---- elementwise -----------------------------------------------------------------------

    /// `x[offset..offset + len] = value`.
    fn fill(&self, x: &mut Self::Buffer, offset: usize, len: usize, value: f64) -> Result<()>;
    /// `dst[dst_offset + e] = src[src_offset + e]` for `e < len`.
    fn copy(
        &self,
        src: &Self::Buffer,
        src_offset: usize,
        dst: &mut Self::Buffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()>;
    /// `dst[dst_offset + e] = src[src_offset + e]` for `e < len`, on integer buffers.
    fn copy_index(
        &self,
        src: &Self::IndexBuffer,
        src_offset: usize,
        dst: &mut Self::IndexBuffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()>;
    /// `x[e] *= alpha` for `e < len`.
    fn scale(&self, x: &mut Self::Buffer, len: usize, alpha: f64) -> Result<()>;
    /// `y[e] += alpha * x[e]` for `e < len`.
    fn axpy(&self, alpha: f64, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()>;
    /// `out[e] = a[e] + b[e]` for `e < len` (the residual join).
    fn add(
        &self,
        a: &Self::Buffer,
        b: &Self::Buffer,
        out: &mut Self::Buffer,
        len: usize,
    ) -> Result<()>;
    /// `out[offset] = scale * sum_{e < len} x[e]`, accumulated in at least f32 with pairwise or
    /// f64 summation (used for the mean loss).
    fn sum(
        &self,
        x: &Self::Buffer,
        len: usize,
        scale: f64,
        out: &mut Self::Buffer,
        offset: usize,
    ) -> Result<()>;

    // ---- dense -----------------------------------------------------------------------------

    /// Strided-batched GEMM; exact semantics in [`GemmDesc`].
    fn gemm(
        &self,
        desc: &GemmDesc,
        a: &Self::Buffer,
        b: &Self::Buffer,
        c: &mut Self::Buffer,
    ) -> Result<()>;
    /// `x[r][c] += bias[c]` for a `rows x cols` matrix (the linear layer's bias).
    fn bias_add(
        &self,
        x: &mut Self::Buffer,
        bias: &Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()>;
    /// `grad_bias[c] += sum_r grad_out[r][c]` (accumulates).
    fn bias_backward(
        &self,
        grad_out: &Self::Buffer,
        grad_bias: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()>;

    // ---- convolution -----------------------------------------------------------------------

    /// Scratch elements the three conv2d methods need for `shape` (0 when none).
    fn conv2d_workspace_len(&self, shape: &Conv2dShape) -> usize;
    /// `output = conv2d(input, weight)` (cross-correlation, as PyTorch), written.
    fn conv2d_forward(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        weight: &Self::Buffer,
        output: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()>;
    /// `grad_input = d(output)/d(input)^T grad_output`, written.
    fn conv2d_backward_data(
        &self,
        shape: &Conv2dShape,
        grad_output: &Self::Buffer,
        weight: &Self::Buffer,
        grad_input: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()>;
    /// `grad_weight += d(output)/d(weight)^T grad_output` (accumulates).
    fn conv2d_backward_filter(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        grad_output: &Self::Buffer,
        grad_weight: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()>;

    // ---- batch normalisation ---------------------------------------------------------------

    /// Training-mode batch norm, per statistics group as [`BatchNormShape`] describes (each
    /// group exactly one call on its block; saved statistics group-major; the running
    /// statistics moved by the groups `shape.moves_running` names, in order, and left bit for
    /// bit alone by the others). Per channel c over n = batch / groups * spatial values:
    /// `mean_c`, biased `var_c`; `save_invstd_c = 1 / sqrt(var_c + eps)`;
    /// `y = (x - mean_c) * save_invstd_c * gamma_c + beta_c`;
    /// `running_mean = (1 - momentum) * running_mean + momentum * mean_c`;
    /// `running_var = (1 - momentum) * running_var + momentum * var_c * n / (n - 1)`
    /// (unbiased; when n = 1 the running variance is left unchanged).
    #[allow(clippy::too_many_arguments)]
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
    ) -> Result<()>;
    /// Inference-mode batch norm:
    /// `y = (x - running_mean_c) / sqrt(running_var_c + eps) * gamma_c + beta_c`.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_forward_inference(
        &self,
        shape: &BatchNormShape,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        beta: &Self::Buffer,
        running_mean: &Self::Buffer,
        running_var: &Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<()>;
    /// Backward of the training-mode forward (batch statistics depend on x), per statistics
    /// group with that group's saved statistics: with `xhat = (x - mean) * invstd`,
    /// `dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))` (means over the
    /// channel's n values in the group), written; `dgamma += sum(dy * xhat)`, `dbeta +=
    /// sum(dy)`, accumulated group by group in group order.
    #[allow(clippy::too_many_arguments)]
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
    ) -> Result<()>;

    // ---- activations and pooling -----------------------------------------------------------

    /// `y[e] = max(x[e], 0)`; a NaN passes through (as `torch.relu`).
    fn relu_forward(&self, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()>;
    /// `grad_x[e] = grad_y[e]` where `y[e] > 0`, else 0 (uses the forward's output).
    fn relu_backward(
        &self,
        y: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        len: usize,
    ) -> Result<()>;
    /// Max pooling; `argmax[o]` = index `h * in_width + w` of the chosen input within its
    /// (image, channel) plane; the first maximum in row-major window order wins ties. A NaN in
    /// the window is selected (the last NaN, as PyTorch) and recorded as `NonFinite` at the
    /// output index.
    fn max_pool2d_forward(
        &self,
        shape: &PoolShape,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        argmax: &mut Self::IndexBuffer,
    ) -> Result<()>;
    /// `grad_x = 0`, then `grad_x[plane + argmax[o]] += grad_y[o]` for every output o.
    fn max_pool2d_backward(
        &self,
        shape: &PoolShape,
        grad_y: &Self::Buffer,
        argmax: &Self::IndexBuffer,
        grad_x: &mut Self::Buffer,
    ) -> Result<()>;
    /// `y[n][c] = mean over spatial of x[n][c][..]`, x is `[batch, channels, spatial]`.
    fn global_avg_pool_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()>;
    /// `grad_x[n][c][s] = grad_y[n][c] / spatial`, written.
    fn global_avg_pool_backward(
        &self,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()>;

    /// torchvision `roi_align`: for each box and bin, the mean of bilinear samples on a
    /// `sampling_ratio` (or adaptive) grid; samples outside `[-1, size]` contribute 0, those in
    /// `[-1, 0)` are clamped to 0. With `aligned = false` the box is scaled without the
    /// half-pixel shift and forced to at least 1x1. A batch index outside `0..batch` (or not a
    /// whole number) is recorded as `LabelOutOfRange` at the box index and that box's output
    /// is 0; samples at non-finite coordinates count as outside the map (they add 0).
    fn roi_align_forward(
        &self,
        shape: &RoiAlignShape,
        features: &Self::Buffer,
        boxes: &Self::Buffer,
        output: &mut Self::Buffer,
    ) -> Result<()>;
    /// Scatters `grad_output` back onto `grad_features` with the same bilinear weights
    /// (accumulates).
    fn roi_align_backward(
        &self,
        shape: &RoiAlignShape,
        grad_output: &Self::Buffer,
        boxes: &Self::Buffer,
        grad_features: &mut Self::Buffer,
    ) -> Result<()>;

    // ---- normalisation and the loss reductions ---------------------------------------------

    /// `norms[r] = ||x_r||`, `y_r = x_r / norms[r]` for a `rows x cols` matrix. Records
    /// `ZeroNormRow` (row index) when a norm is below `f32::MIN_POSITIVE` and `NonFinite` when
    /// it is not finite; such a row's output is 0.
    fn l2_normalize_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        norms: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()>;
    /// `grad_x_r = (grad_y_r - y_r (y_r . grad_y_r)) / norms[r]`, written (0 for a zero-norm row).
    fn l2_normalize_backward(
        &self,
        y: &Self::Buffer,
        norms: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()>;
    /// Numerically stable (max-subtracted) softmax of each row over its valid columns;
    /// masked columns of `y` are set to 0. Records `NonFinite` (row) when a row's
    /// log-sum-exp is not finite.
    fn row_softmax(&self, desc: &RowsDesc, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<()>;
    /// `out[r] = log sum_{c < valid_cols} exp(x[r][c])`, max-subtracted. Records `NonFinite`.
    fn row_logsumexp(
        &self,
        desc: &RowsDesc,
        x: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()>;
    /// The supervised contrastive loss (SupCon or DSCL) of a block of anchors, fused with its
    /// gradient. On entry `logits` holds `s_ij` (block row r = anchor `i = row_offset + r`); on
    /// exit it holds `grad_scale * dL_i/ds_ij`.
    ///
    /// With `A(i) = { j < valid_cols : j != i }`, `log p_ij = s_ij - log sum_{a in A(i)}
    /// exp(s_ia)` (max-subtracted), positives `P(i) = { j in A(i) : label_j == label_i }` where
    /// `label_j = labels[j]` (so the anchor's own label is `labels[i]`), weights
    /// `w_ij` per [`crate::desc::PositiveWeighting`] (for DSCL, the augmented view `batch + i`
    /// gets 1 and others `beta / (|P(i)| - 1)`; no others: only the view), `W_i = sum w_ij`:
    /// `loss[i] = -sum_{j in P(i)} w_ij log p_ij / W_i` (written at `row_offset + r`) and
    /// `dL_i/ds_ij = p_ij - w_ij / W_i` for `j in A(i)`, 0 for `j = i` and masked columns.
    /// Records `LabelOutOfRange` (column index) for a label `>= num_classes` among the first
    /// `valid_cols` labels and `NonFinite` (anchor index) for a non-finite log-sum-exp.
    /// An anchor whose positives carry no weight (possible only when `labels[batch + i] !=
    /// labels[i]`, which the losses never build) gets loss 0 and a zero gradient row.
    fn contrastive_rows(
        &self,
        desc: &ContrastiveRowsDesc,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()>;
    /// Soft-target cross-entropy fused with its gradient (PBSD's distillation term): with
    /// `log q_rc = log_softmax(logits_r)_c` over valid columns,
    /// `loss[r] = -sum_c targets[r][c] log q_rc`; on exit `logits` holds
    /// `grad_scale * (q_rc * sum_c' targets[r][c'] - targets[r][c])`, 0 on masked columns.
    /// Records `NonFinite` (row).
    fn soft_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        targets: &Self::Buffer,
        loss: &mut Self::Buffer,
    ) -> Result<()>;
    /// Hard-label softmax cross-entropy fused with its gradient (the classifier's loss):
    /// `loss[r] = logsumexp(logits_r) - logits[r][labels[r]]`; on exit `logits` holds
    /// `grad_scale * (softmax(logits_r) - onehot(labels[r]))`. Records `LabelOutOfRange` (row)
    /// for a label `>= valid_cols` (that row's loss and gradient are 0) and `NonFinite` (row).
    fn softmax_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()>;

    // ---- optimisation ----------------------------------------------------------------------

    /// One SGD step on `len` parameters; exact semantics in [`SgdParams`].
    fn sgd_momentum_update(
        &self,
        params: &SgdParams,
        weights: &mut Self::Buffer,
        grads: &Self::Buffer,
        velocity: &mut Self::Buffer,
        len: usize,
    ) -> Result<()>;
    /// Momentum-encoder update: `target = momentum * target + (1 - momentum) * source`.
    fn ema_update(
        &self,
        momentum: f64,
        source: &Self::Buffer,
        target: &mut Self::Buffer,
        len: usize,
    ) -> Result<()>;
}
