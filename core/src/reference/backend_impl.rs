//! `impl Backend for ReferenceBackend`: every method hands its buffers' slices to the free
//! function of the same name, which validates and computes.

use super::buffer::{ReferenceBuffer, ReferenceIndexBuffer};
use super::{
    batch_norm, conv, elementwise, gemm, memory, optim, pool, roi_align, rows, ReferenceBackend,
};
use crate::backend::Backend;
use crate::desc::{
    BatchNormShape, ContrastiveRowsDesc, Conv2dShape, GemmDesc, PoolShape, RoiAlignShape, RowsDesc,
    SgdParams,
};
use crate::element::Element;
use crate::error::{Fault, Result};

impl<T: Element> Backend for ReferenceBackend<T> {
    type Elem = T;
    type Buffer = ReferenceBuffer<T>;
    type IndexBuffer = ReferenceIndexBuffer;

    fn device_name(&self) -> &str {
        "reference (scalar, f64 accumulation)"
    }

    // ---- memory ----------------------------------------------------------------------------

    fn alloc(&self, len: usize) -> Result<Self::Buffer> {
        memory::alloc_zeroed(len).map(ReferenceBuffer::from_vec)
    }

    fn alloc_index(&self, len: usize) -> Result<Self::IndexBuffer> {
        memory::alloc_zeroed(len).map(ReferenceIndexBuffer::from_vec)
    }

    fn upload(&self, dst: &mut Self::Buffer, offset: usize, src: &[T]) -> Result<()> {
        memory::upload("upload", dst.as_mut_slice(), offset, src)
    }

    fn download(&self, src: &Self::Buffer, offset: usize, dst: &mut [T]) -> Result<()> {
        memory::download("download", src.as_slice(), offset, dst)
    }

    fn upload_index(&self, dst: &mut Self::IndexBuffer, offset: usize, src: &[u32]) -> Result<()> {
        memory::upload("upload_index", dst.as_mut_slice(), offset, src)
    }

    fn download_index(
        &self,
        src: &Self::IndexBuffer,
        offset: usize,
        dst: &mut [u32],
    ) -> Result<()> {
        memory::download("download_index", src.as_slice(), offset, dst)
    }

    fn take_fault(&self) -> Result<Option<Fault>> {
        Ok(self.faults.take())
    }

    // ---- elementwise -----------------------------------------------------------------------

    fn fill(&self, x: &mut Self::Buffer, offset: usize, len: usize, value: f64) -> Result<()> {
        elementwise::fill(x.as_mut_slice(), offset, len, value)
    }

    fn copy(
        &self,
        src: &Self::Buffer,
        src_offset: usize,
        dst: &mut Self::Buffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        memory::copy(
            "copy",
            src.as_slice(),
            src_offset,
            dst.as_mut_slice(),
            dst_offset,
            len,
        )
    }

    fn copy_index(
        &self,
        src: &Self::IndexBuffer,
        src_offset: usize,
        dst: &mut Self::IndexBuffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        memory::copy(
            "copy_index",
            src.as_slice(),
            src_offset,
            dst.as_mut_slice(),
            dst_offset,
            len,
        )
    }

    fn scale(&self, x: &mut Self::Buffer, len: usize, alpha: f64) -> Result<()> {
        elementwise::scale(x.as_mut_slice(), len, alpha)
    }

    fn axpy(&self, alpha: f64, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        elementwise::axpy(alpha, x.as_slice(), y.as_mut_slice(), len)
    }

    fn add(
        &self,
        a: &Self::Buffer,
        b: &Self::Buffer,
        out: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        elementwise::add(a.as_slice(), b.as_slice(), out.as_mut_slice(), len)
    }

    fn sum(
        &self,
        x: &Self::Buffer,
        len: usize,
        scale: f64,
        out: &mut Self::Buffer,
        offset: usize,
    ) -> Result<()> {
        elementwise::sum(x.as_slice(), len, scale, out.as_mut_slice(), offset)
    }

    // ---- dense -----------------------------------------------------------------------------

    fn gemm(
        &self,
        desc: &GemmDesc,
        a: &Self::Buffer,
        b: &Self::Buffer,
        c: &mut Self::Buffer,
    ) -> Result<()> {
        gemm::gemm(desc, a.as_slice(), b.as_slice(), c.as_mut_slice())
    }

    fn bias_add(
        &self,
        x: &mut Self::Buffer,
        bias: &Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        gemm::bias_add(x.as_mut_slice(), bias.as_slice(), rows, cols)
    }

    fn bias_backward(
        &self,
        grad_out: &Self::Buffer,
        grad_bias: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        gemm::bias_backward(grad_out.as_slice(), grad_bias.as_mut_slice(), rows, cols)
    }

    // ---- convolution -----------------------------------------------------------------------

    fn conv2d_workspace_len(&self, _shape: &Conv2dShape) -> usize {
        // Direct summation needs no scratch.
        0
    }

    fn conv2d_forward(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        weight: &Self::Buffer,
        output: &mut Self::Buffer,
        _workspace: &mut Self::Buffer,
    ) -> Result<()> {
        conv::conv2d_forward(
            shape,
            input.as_slice(),
            weight.as_slice(),
            output.as_mut_slice(),
        )
    }

    fn conv2d_backward_data(
        &self,
        shape: &Conv2dShape,
        grad_output: &Self::Buffer,
        weight: &Self::Buffer,
        grad_input: &mut Self::Buffer,
        _workspace: &mut Self::Buffer,
    ) -> Result<()> {
        conv::conv2d_backward_data(
            shape,
            grad_output.as_slice(),
            weight.as_slice(),
            grad_input.as_mut_slice(),
        )
    }

    fn conv2d_backward_filter(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        grad_output: &Self::Buffer,
        grad_weight: &mut Self::Buffer,
        _workspace: &mut Self::Buffer,
    ) -> Result<()> {
        conv::conv2d_backward_filter(
            shape,
            input.as_slice(),
            grad_output.as_slice(),
            grad_weight.as_mut_slice(),
        )
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
        batch_norm::batch_norm_forward_train(
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
        batch_norm::batch_norm_forward_inference(
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
        batch_norm::batch_norm_backward(
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

    // ---- activations and pooling -----------------------------------------------------------

    fn relu_forward(&self, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        elementwise::relu_forward(x.as_slice(), y.as_mut_slice(), len)
    }

    fn relu_backward(
        &self,
        y: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        elementwise::relu_backward(y.as_slice(), grad_y.as_slice(), grad_x.as_mut_slice(), len)
    }

    fn max_pool2d_forward(
        &self,
        shape: &PoolShape,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        argmax: &mut Self::IndexBuffer,
    ) -> Result<()> {
        pool::max_pool2d_forward(
            shape,
            x.as_slice(),
            y.as_mut_slice(),
            argmax.as_mut_slice(),
            &self.faults,
        )
    }

    fn max_pool2d_backward(
        &self,
        shape: &PoolShape,
        grad_y: &Self::Buffer,
        argmax: &Self::IndexBuffer,
        grad_x: &mut Self::Buffer,
    ) -> Result<()> {
        pool::max_pool2d_backward(
            shape,
            grad_y.as_slice(),
            argmax.as_slice(),
            grad_x.as_mut_slice(),
        )
    }

    fn global_avg_pool_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        pool::global_avg_pool_forward(x.as_slice(), y.as_mut_slice(), batch, channels, spatial)
    }

    fn global_avg_pool_backward(
        &self,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        pool::global_avg_pool_backward(
            grad_y.as_slice(),
            grad_x.as_mut_slice(),
            batch,
            channels,
            spatial,
        )
    }

    fn roi_align_forward(
        &self,
        shape: &RoiAlignShape,
        features: &Self::Buffer,
        boxes: &Self::Buffer,
        output: &mut Self::Buffer,
    ) -> Result<()> {
        roi_align::roi_align_forward(
            shape,
            features.as_slice(),
            boxes.as_slice(),
            output.as_mut_slice(),
            &self.faults,
        )
    }

    fn roi_align_backward(
        &self,
        shape: &RoiAlignShape,
        grad_output: &Self::Buffer,
        boxes: &Self::Buffer,
        grad_features: &mut Self::Buffer,
    ) -> Result<()> {
        roi_align::roi_align_backward(
            shape,
            grad_output.as_slice(),
            boxes.as_slice(),
            grad_features.as_mut_slice(),
            &self.faults,
        )
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
        rows::l2_normalize_forward(
            x.as_slice(),
            y.as_mut_slice(),
            norms.as_mut_slice(),
            rows,
            cols,
            &self.faults,
        )
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
        rows::l2_normalize_backward(
            y.as_slice(),
            norms.as_slice(),
            grad_y.as_slice(),
            grad_x.as_mut_slice(),
            rows,
            cols,
        )
    }

    fn row_softmax(&self, desc: &RowsDesc, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<()> {
        rows::row_softmax(desc, x.as_slice(), y.as_mut_slice(), &self.faults)
    }

    fn row_logsumexp(
        &self,
        desc: &RowsDesc,
        x: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        rows::row_logsumexp(desc, x.as_slice(), out.as_mut_slice(), &self.faults)
    }

    fn contrastive_rows(
        &self,
        desc: &ContrastiveRowsDesc,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        rows::contrastive_rows(
            desc,
            logits.as_mut_slice(),
            labels.as_slice(),
            loss.as_mut_slice(),
            &self.faults,
        )
    }

    fn soft_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        targets: &Self::Buffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        rows::soft_cross_entropy(
            desc,
            grad_scale,
            logits.as_mut_slice(),
            targets.as_slice(),
            loss.as_mut_slice(),
            &self.faults,
        )
    }

    fn softmax_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        rows::softmax_cross_entropy(
            desc,
            grad_scale,
            logits.as_mut_slice(),
            labels.as_slice(),
            loss.as_mut_slice(),
            &self.faults,
        )
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
        optim::sgd_momentum_update(
            params,
            weights.as_mut_slice(),
            grads.as_slice(),
            velocity.as_mut_slice(),
            len,
        )
    }

    fn ema_update(
        &self,
        momentum: f64,
        source: &Self::Buffer,
        target: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        optim::ema_update(momentum, source.as_slice(), target.as_mut_slice(), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BufferLen;
    use crate::error::{Error, FaultKind};

    #[test]
    fn memory_round_trip_through_the_trait() {
        let backend = ReferenceBackend::<f32>::new();
        let mut buffer = backend.alloc(4).unwrap();
        assert_eq!(buffer.len(), 4);
        backend.upload(&mut buffer, 1, &[1.0, 2.0]).unwrap();
        let mut host = [9.0f32; 3];
        backend.download(&buffer, 1, &mut host).unwrap();
        assert_eq!(host, [1.0, 2.0, 0.0]);
        assert!(matches!(
            backend.download(&buffer, 2, &mut host),
            Err(Error::ShapeMismatch { .. })
        ));
        let mut labels = backend.alloc_index(2).unwrap();
        backend.upload_index(&mut labels, 0, &[3, 4]).unwrap();
        let mut copy = backend.alloc_index(3).unwrap();
        backend.copy_index(&labels, 0, &mut copy, 1, 2).unwrap();
        assert_eq!(copy.as_slice(), &[0, 3, 4]);
    }

    #[test]
    fn faults_surface_through_take_fault() {
        let backend = ReferenceBackend::<f64>::new();
        let x = ReferenceBuffer::from_vec(alloc::vec![0.0; 4]);
        let mut y = backend.alloc(4).unwrap();
        let mut norms = backend.alloc(2).unwrap();
        backend
            .l2_normalize_forward(&x, &mut y, &mut norms, 2, 2)
            .unwrap();
        let fault = backend.take_fault().unwrap().unwrap();
        assert_eq!((fault.kind, fault.index), (FaultKind::ZeroNormRow, 0));
        assert_eq!(backend.take_fault().unwrap(), None);
    }
}
