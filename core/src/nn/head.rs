//! The projection head `Linear(c, c) -> ReLU -> Linear(c, out)` (out = 128 in the paper).

use crate::backend::{Backend, BufferLen};
use crate::error::{check_len, Result};
use crate::loss::L2Normalize;
use crate::nn::activation::{relu_backward, relu_forward};
use crate::nn::linear::Linear;
use crate::nn::tensors::{TensorLayout, TensorSet};

/// The paper's embedding dimension.
pub const DEFAULT_EMBEDDING_DIM: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProjectionHead {
    pub fc1: Linear,
    pub fc2: Linear,
}

/// One pass's activations of the head for `rows` inputs, and its gradient temporaries.
pub struct HeadRecord<B: Backend> {
    pub rows: usize,
    pub hidden: B::Buffer,
    pub act: B::Buffer,
    /// The embeddings `[rows, out]` (not yet normalised).
    pub out: B::Buffer,
    d_act: B::Buffer,
    d_hidden: B::Buffer,
}

/// A pass from pooled features to unit embeddings: the head's activations, the row L2
/// normalisation and the embeddings, with the backward's temporaries. What an
/// [`Encoder`](crate::nn::Encoder) and an [`EncoderTail`](crate::nn::EncoderTail) keep after
/// their pooling.
pub struct EmbeddingRecord<B: Backend> {
    pub head: HeadRecord<B>,
    pub normalize: L2Normalize<B>,
    /// `[rows, out]`, unit rows.
    pub embeddings: B::Buffer,
    d_head_out: B::Buffer,
    /// The gradient at the pooled features, written by [`ProjectionHead::embed_backward`].
    pub d_pooled: B::Buffer,
}

impl ProjectionHead {
    /// Registers `head.0` (c x c) and `head.2` (out x c), named as `nn.Sequential` would.
    pub fn new(params: &mut TensorLayout, channels: usize, out_dim: usize) -> Result<Self> {
        Ok(ProjectionHead {
            fc1: Linear::new(params, "head.0", channels, channels)?,
            fc2: Linear::new(params, "head.2", channels, out_dim)?,
        })
    }

    pub fn out_dim(&self) -> usize {
        self.fc2.out_features
    }

    pub fn plan<B: Backend>(&self, backend: &B, rows: usize) -> Result<HeadRecord<B>> {
        let hidden_len = rows * self.fc1.out_features;
        Ok(HeadRecord {
            rows,
            hidden: backend.alloc(hidden_len)?,
            act: backend.alloc(hidden_len)?,
            out: backend.alloc(rows * self.fc2.out_features)?,
            d_act: backend.alloc(hidden_len)?,
            d_hidden: backend.alloc(hidden_len)?,
        })
    }

    /// `record.out = fc2(relu(fc1(x)))`.
    pub fn forward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        record: &mut HeadRecord<B>,
        x: &B::Buffer,
    ) -> Result<()> {
        let rows = record.rows;
        check_len("head input", x.len(), rows * self.fc1.in_features)?;
        self.fc1
            .forward(backend, params, rows, x, &mut record.hidden)?;
        relu_forward(
            backend,
            &record.hidden,
            &mut record.act,
            rows * self.fc1.out_features,
        )?;
        self.fc2
            .forward(backend, params, rows, &record.act, &mut record.out)
    }

    /// Backward from `d_out` to `dx` (written), accumulating the head's parameter gradients.
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        grads: &mut TensorSet<B>,
        record: &mut HeadRecord<B>,
        x: &B::Buffer,
        d_out: &B::Buffer,
        dx: &mut B::Buffer,
    ) -> Result<()> {
        let rows = record.rows;
        self.fc2.backward(
            backend,
            params,
            grads,
            rows,
            &record.act,
            d_out,
            Some(&mut record.d_act),
        )?;
        relu_backward(
            backend,
            &record.act,
            &record.d_act,
            &mut record.d_hidden,
            rows * self.fc1.out_features,
        )?;
        self.fc1
            .backward(backend, params, grads, rows, x, &record.d_hidden, Some(dx))
    }

    /// Plans the head and the normalisation for `rows` pooled features.
    pub fn plan_embedding<B: Backend>(
        &self,
        backend: &B,
        rows: usize,
    ) -> Result<EmbeddingRecord<B>> {
        let dim = self.out_dim();
        Ok(EmbeddingRecord {
            head: self.plan(backend, rows)?,
            normalize: L2Normalize::new(backend, rows, dim)?,
            embeddings: backend.alloc(rows * dim)?,
            d_head_out: backend.alloc(rows * dim)?,
            d_pooled: backend.alloc(rows * self.fc1.in_features)?,
        })
    }

    /// `record.embeddings = normalise(fc2(relu(fc1(pooled))))`. A zero-norm or non-finite
    /// embedding is recorded as a kernel fault that the loss reading these embeddings
    /// reports, so the pass never waits for the device.
    pub fn embed<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        record: &mut EmbeddingRecord<B>,
        pooled: &B::Buffer,
    ) -> Result<()> {
        self.forward(backend, params, &mut record.head, pooled)?;
        record
            .normalize
            .forward(backend, &record.head.out, &mut record.embeddings)
    }

    /// Backward from `d_embeddings` through the normalisation and the head into
    /// `record.d_pooled`, accumulating the head's parameter gradients.
    pub fn embed_backward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        grads: &mut TensorSet<B>,
        record: &mut EmbeddingRecord<B>,
        pooled: &B::Buffer,
        d_embeddings: &B::Buffer,
    ) -> Result<()> {
        record.normalize.backward(
            backend,
            &record.embeddings,
            d_embeddings,
            &mut record.d_head_out,
        )?;
        self.backward(
            backend,
            params,
            grads,
            &mut record.head,
            pooled,
            &record.d_head_out,
            &mut record.d_pooled,
        )
    }
}
