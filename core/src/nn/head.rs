//! The projection head `Linear(c, c) -> ReLU -> Linear(c, out)` (out = 128 in the paper).

use crate::backend::{Backend, BufferLen};
use crate::error::{check_len, Result};
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
}
