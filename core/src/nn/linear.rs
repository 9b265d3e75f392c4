//! Fully connected layer `y = x W^T + b` over row-major `[rows, in]` inputs.

use crate::backend::Backend;
use crate::desc::GemmDesc;
use crate::error::Result;
use crate::nn::tensors::{Init, TensorId, TensorLayout, TensorSet};

/// `nn.Linear(in_features, out_features)`: weight `[out, in]`, bias `[out]`, both initialised
/// as PyTorch does by default (uniform with bound `1 / sqrt(in_features)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub weight: TensorId,
    pub bias: TensorId,
}

impl Linear {
    pub fn new(
        params: &mut TensorLayout,
        name: &str,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        let bound = 1.0 / libm::sqrt(in_features.max(1) as f64);
        let init = Init::Uniform { bound };
        Self::with_init(params, name, in_features, out_features, init, init)
    }

    /// The layer with its weight drawn per `weight` and its bias per `bias` instead of
    /// PyTorch's default.
    pub fn with_init(
        params: &mut TensorLayout,
        name: &str,
        in_features: usize,
        out_features: usize,
        weight: Init,
        bias: Init,
    ) -> Result<Self> {
        Ok(Linear {
            in_features,
            out_features,
            weight: params.push(name, "weight", &[out_features, in_features], weight)?,
            bias: params.push(name, "bias", &[out_features], bias)?,
        })
    }

    /// `y = x W^T + b` for `rows` input rows.
    pub fn forward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        rows: usize,
        x: &B::Buffer,
        y: &mut B::Buffer,
    ) -> Result<()> {
        let (i, o) = (self.in_features, self.out_features);
        backend.gemm(
            &GemmDesc::new(rows, o, i, false, true),
            x,
            params.get(self.weight),
            y,
        )?;
        backend.bias_add(y, params.get(self.bias), rows, o)
    }

    /// `grads[W] += dy^T x`, `grads[b] += sum_rows dy`, and `dx = dy W` (written) when given.
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        grads: &mut TensorSet<B>,
        rows: usize,
        x: &B::Buffer,
        dy: &B::Buffer,
        dx: Option<&mut B::Buffer>,
    ) -> Result<()> {
        let (i, o) = (self.in_features, self.out_features);
        backend.gemm(
            &GemmDesc::new(o, i, rows, true, false).beta(1.0),
            dy,
            x,
            grads.get_mut(self.weight),
        )?;
        backend.bias_backward(dy, grads.get_mut(self.bias), rows, o)?;
        if let Some(dx) = dx {
            backend.gemm(
                &GemmDesc::new(rows, i, o, false, false),
                dy,
                params.get(self.weight),
                dx,
            )?;
        }
        Ok(())
    }
}
