//! The Backend trait over [`CudaBackend`], and the host side of the kernels: one module per
//! kernel family, as `kernels/<family>.cu`, each with its argument struct (`kernel_args.rs`)
//! and launchers. The trait's methods here pass each call to its family.

mod batch_norm;
pub(crate) mod bf16;
mod conv;
mod elementwise;
mod optim;
mod pool;
mod roi_align;
mod rows;

use dscl_core::desc::{
    BatchNormShape, ContrastiveRowsDesc, Conv2dShape, GemmDesc, PoolShape, RoiAlignShape, RowsDesc,
    SgdParams,
};
use dscl_core::{Backend, Fault, Result};

use crate::backend::{too_large, CudaBackend, CudaBuffer};
use crate::kernel_args::Layout;

/// Every kernel argument struct, for the drift check of the kernels' compile.
pub(crate) const ARGS: &[Layout] = &[
    batch_norm::BatchNormArgs::LAYOUT,
    bf16::Bf16Args::LAYOUT,
    conv::ConvArgs::LAYOUT,
    elementwise::ElementwiseArgs::LAYOUT,
    optim::OptimArgs::LAYOUT,
    pool::PoolArgs::LAYOUT,
    roi_align::RoiAlignArgs::LAYOUT,
    rows::RowsArgs::LAYOUT,
];

/// A size as a kernel's `u32` parameter.
fn u32_of(what: &'static str, x: usize) -> Result<u32> {
    u32::try_from(x).map_err(|_| too_large(what))
}

impl Backend for CudaBackend {
    type Elem = f32;
    type Buffer = CudaBuffer<f32>;
    type IndexBuffer = CudaBuffer<u32>;

    fn device_name(&self) -> &str {
        self.description()
    }

    fn alloc(&self, len: usize) -> Result<Self::Buffer> {
        self.alloc_raw(len)
    }

    fn alloc_index(&self, len: usize) -> Result<Self::IndexBuffer> {
        self.alloc_raw(len)
    }

    fn upload(&self, dst: &mut Self::Buffer, offset: usize, src: &[f32]) -> Result<()> {
        self.write("upload", dst, offset, src)
    }

    fn download(&self, src: &Self::Buffer, offset: usize, dst: &mut [f32]) -> Result<()> {
        self.read("download", src, offset, dst)
    }

    fn upload_index(&self, dst: &mut Self::IndexBuffer, offset: usize, src: &[u32]) -> Result<()> {
        self.write("upload_index", dst, offset, src)
    }

    fn download_index(
        &self,
        src: &Self::IndexBuffer,
        offset: usize,
        dst: &mut [u32],
    ) -> Result<()> {
        self.read("download_index", src, offset, dst)
    }

    fn take_fault(&self) -> Result<Option<Fault>> {
        self.take_fault_slot()
    }

    fn download_with_fault(
        &self,
        src: &Self::Buffer,
        offset: usize,
        dst: &mut [f32],
    ) -> Result<Option<Fault>> {
        self.read_with_fault("download", src, offset, dst)
    }

    // ---- elementwise -----------------------------------------------------------------------

    fn fill(&self, x: &mut Self::Buffer, offset: usize, len: usize, value: f64) -> Result<()> {
        elementwise::fill(self, x, offset, len, value)
    }

    fn copy(
        &self,
        src: &Self::Buffer,
        src_offset: usize,
        dst: &mut Self::Buffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        elementwise::copy(self, src, src_offset, dst, dst_offset, len)
    }

    fn copy_index(
        &self,
        src: &Self::IndexBuffer,
        src_offset: usize,
        dst: &mut Self::IndexBuffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        elementwise::copy_index(self, src, src_offset, dst, dst_offset, len)
    }

    fn scale(&self, x: &mut Self::Buffer, len: usize, alpha: f64) -> Result<()> {
        elementwise::scale(self, x, len, alpha)
    }

    fn axpy(&self, alpha: f64, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        elementwise::axpy(self, alpha, x, y, len)
    }

    fn add(
        &self,
        a: &Self::Buffer,
        b: &Self::Buffer,
        out: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        elementwise::add(self, a, b, out, len)
    }

    fn sum(
        &self,
        x: &Self::Buffer,
        len: usize,
        scale: f64,
        out: &mut Self::Buffer,
        offset: usize,
    ) -> Result<()> {
        elementwise::sum(self, x, len, scale, out, offset)
    }

    // ---- dense -----------------------------------------------------------------------------

    fn gemm(
        &self,
        desc: &GemmDesc,
        a: &Self::Buffer,
        b: &Self::Buffer,
        c: &mut Self::Buffer,
    ) -> Result<()> {
        self.gemm_cublas(desc, a, b, c)
    }

    fn bias_add(
        &self,
        x: &mut Self::Buffer,
        bias: &Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        elementwise::bias_add(self, x, bias, rows, cols)
    }

    fn bias_backward(
        &self,
        grad_out: &Self::Buffer,
        grad_bias: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        elementwise::bias_backward(self, grad_out, grad_bias, rows, cols)
    }

    // ---- convolution -----------------------------------------------------------------------

    fn conv2d_workspace_len(&self, shape: &Conv2dShape) -> usize {
        self.conv_workspace_len(shape)
    }

    fn conv2d_forward(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        weight: &Self::Buffer,
        output: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        conv::forward(self, shape, input, weight, output, workspace)
    }

    fn conv2d_backward_data(
        &self,
        shape: &Conv2dShape,
        grad_output: &Self::Buffer,
        weight: &Self::Buffer,
        grad_input: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        conv::backward_data(self, shape, grad_output, weight, grad_input, workspace)
    }

    fn conv2d_backward_filter(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        grad_output: &Self::Buffer,
        grad_weight: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        conv::backward_filter(self, shape, input, grad_output, grad_weight, workspace)
    }

    // ---- batch normalisation ---------------------------------------------------------------

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
        batch_norm::forward_train(
            self,
            shape,
            x,
            gamma,
            beta,
            y,
            save_mean,
            save_invstd,
            running_mean,
            running_var,
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
        batch_norm::forward_inference(self, shape, x, gamma, beta, running_mean, running_var, y)
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
        batch_norm::backward(
            self,
            shape,
            x,
            grad_y,
            gamma,
            save_mean,
            save_invstd,
            grad_x,
            grad_gamma,
            grad_beta,
        )
    }

    // ---- activations and pooling -----------------------------------------------------------

    fn relu_forward(&self, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        elementwise::relu_forward(self, x, y, len)
    }

    fn relu_backward(
        &self,
        y: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        elementwise::relu_backward(self, y, grad_y, grad_x, len)
    }

    fn max_pool2d_forward(
        &self,
        shape: &PoolShape,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        argmax: &mut Self::IndexBuffer,
    ) -> Result<()> {
        pool::max_pool2d_forward(self, shape, x, y, argmax)
    }

    fn max_pool2d_backward(
        &self,
        shape: &PoolShape,
        grad_y: &Self::Buffer,
        argmax: &Self::IndexBuffer,
        grad_x: &mut Self::Buffer,
    ) -> Result<()> {
        pool::max_pool2d_backward(self, shape, grad_y, argmax, grad_x)
    }

    fn global_avg_pool_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        pool::global_avg_pool_forward(self, x, y, batch, channels, spatial)
    }

    fn global_avg_pool_backward(
        &self,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        pool::global_avg_pool_backward(self, grad_y, grad_x, batch, channels, spatial)
    }

    fn roi_align_forward(
        &self,
        shape: &RoiAlignShape,
        features: &Self::Buffer,
        boxes: &Self::Buffer,
        output: &mut Self::Buffer,
    ) -> Result<()> {
        roi_align::forward(self, shape, features, boxes, output)
    }

    fn roi_align_backward(
        &self,
        shape: &RoiAlignShape,
        grad_output: &Self::Buffer,
        boxes: &Self::Buffer,
        grad_features: &mut Self::Buffer,
    ) -> Result<()> {
        roi_align::backward(self, shape, grad_output, boxes, grad_features)
    }

    // ---- normalisation and the loss reductions ---------------------------------------------

    fn l2_normalize_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        norms: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        rows::l2_normalize_forward(self, x, y, norms, rows, cols)
    }

    fn l2_normalize_backward(
        &self,
        y: &Self::Buffer,
        norms: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        rows::l2_normalize_backward(self, y, norms, grad_y, grad_x, rows, cols)
    }

    fn row_softmax(&self, desc: &RowsDesc, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<()> {
        rows::row_softmax(self, desc, x, y)
    }

    fn row_logsumexp(
        &self,
        desc: &RowsDesc,
        x: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        rows::row_logsumexp(self, desc, x, out)
    }

    fn contrastive_rows(
        &self,
        desc: &ContrastiveRowsDesc,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        rows::contrastive_rows(self, desc, logits, labels, loss)
    }

    fn soft_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        targets: &Self::Buffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        rows::soft_cross_entropy(self, desc, grad_scale, logits, targets, loss)
    }

    fn softmax_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        rows::softmax_cross_entropy(self, desc, grad_scale, logits, labels, loss)
    }

    // ---- optimisation ----------------------------------------------------------------------

    fn sgd_momentum_update(
        &self,
        params: &SgdParams,
        weights: &mut Self::Buffer,
        grads: &Self::Buffer,
        velocity: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        optim::sgd_momentum_update(self, params, weights, grads, velocity, len)
    }

    fn ema_update(
        &self,
        momentum: f64,
        source: &Self::Buffer,
        target: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        optim::ema_update(self, momentum, source, target, len)
    }
}
