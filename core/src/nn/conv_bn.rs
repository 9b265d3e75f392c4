//! Convolution followed by batch norm: the unit every ResNet is built of.

use crate::backend::Backend;
use crate::desc::{BatchNormShape, Conv2dShape};
use crate::error::Result;
use crate::nn::batch_norm::{BatchNorm2d, BatchNormSaved, BnMode, StatGroups};
use crate::nn::conv::Conv2d;
use crate::nn::tensors::{TensorLayout, TensorSet};

/// `bn(conv(x))`, named like torchvision (`conv1` + `bn1`, or `downsample.0` + `downsample.1`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
}

/// One pass's record of a [`ConvBn`]: its shapes, the convolution output (the norm's input,
/// needed by its backward) and the norm's batch statistics.
pub struct ConvBnRecord<B: Backend> {
    pub conv_shape: Conv2dShape,
    pub bn_shape: BatchNormShape,
    pub conv_out: B::Buffer,
    pub saved: BatchNormSaved<B>,
}

impl<B: Backend> ConvBnRecord<B> {
    pub fn out_len(&self) -> usize {
        self.conv_shape.output_len()
    }
    /// (channels, height, width) of the output.
    pub fn out_dims(&self) -> (usize, usize, usize) {
        (
            self.conv_shape.out_channels,
            self.conv_shape.out_height(),
            self.conv_shape.out_width(),
        )
    }
}

/// Sizes of the shared buffers a pass needs: the largest activation and convolution workspace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScratchNeeds {
    pub activation: usize,
    pub conv_workspace: usize,
}

impl ScratchNeeds {
    pub fn max(self, other: ScratchNeeds) -> ScratchNeeds {
        ScratchNeeds {
            activation: self.activation.max(other.activation),
            conv_workspace: self.conv_workspace.max(other.conv_workspace),
        }
    }
}

impl ConvBn {
    pub fn new(
        params: &mut TensorLayout,
        state: &mut TensorLayout,
        conv_name: &str,
        bn_name: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        zero_gamma: bool,
    ) -> Result<Self> {
        Ok(ConvBn {
            conv: Conv2d::new(
                params,
                conv_name,
                in_channels,
                out_channels,
                kernel,
                stride,
                kernel / 2,
            )?,
            bn: BatchNorm2d::new(params, state, bn_name, out_channels, zero_gamma)?,
        })
    }

    /// Plans the record for a `[batch, in_channels, height, width]` input, its batch norm
    /// with the statistics groups `groups`.
    pub fn plan<B: Backend>(
        &self,
        backend: &B,
        batch: usize,
        height: usize,
        width: usize,
        groups: StatGroups,
    ) -> Result<ConvBnRecord<B>> {
        let conv_shape = self.conv.shape(batch, height, width);
        conv_shape.check_shape()?;
        let bn_shape = self.bn.shape(
            batch,
            conv_shape.out_height() * conv_shape.out_width(),
            groups,
        );
        bn_shape.check(bn_shape.len(), bn_shape.channels)?;
        Ok(ConvBnRecord {
            conv_shape,
            bn_shape,
            conv_out: backend.alloc(conv_shape.output_len())?,
            saved: BatchNormSaved::new(backend, &bn_shape)?,
        })
    }

    pub fn needs<B: Backend>(&self, backend: &B, record: &ConvBnRecord<B>) -> ScratchNeeds {
        ScratchNeeds {
            activation: record.conv_shape.output_len(),
            conv_workspace: backend.conv2d_workspace_len(&record.conv_shape),
        }
    }

    /// `y = bn(conv(x))`, the norm in training mode (batch statistics saved in `record`,
    /// running statistics updated) or inference mode (running statistics used), per `mode`.
    pub fn forward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        mode: BnMode<'_, B>,
        record: &mut ConvBnRecord<B>,
        x: &B::Buffer,
        y: &mut B::Buffer,
        workspace: &mut B::Buffer,
    ) -> Result<()> {
        self.conv.forward(
            backend,
            params,
            &record.conv_shape,
            x,
            &mut record.conv_out,
            workspace,
        )?;
        match mode {
            BnMode::Train(state) => self.bn.forward_train(
                backend,
                params,
                state,
                &record.bn_shape,
                &record.conv_out,
                y,
                &mut record.saved,
            ),
            BnMode::Inference(state) => self.bn.forward_inference(
                backend,
                params,
                state,
                &record.bn_shape,
                &record.conv_out,
                y,
            ),
        }
    }

    /// Given `dy` at the norm's output: accumulates both layers' parameter gradients and
    /// writes `dx` when given; `tmp` receives the gradient at the convolution's output.
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        grads: &mut TensorSet<B>,
        record: &ConvBnRecord<B>,
        x: &B::Buffer,
        dy: &B::Buffer,
        dx: Option<&mut B::Buffer>,
        tmp: &mut B::Buffer,
        workspace: &mut B::Buffer,
    ) -> Result<()> {
        self.bn.backward(
            backend,
            params,
            grads,
            &record.bn_shape,
            &record.conv_out,
            dy,
            &record.saved,
            tmp,
        )?;
        self.conv.backward(
            backend,
            params,
            grads,
            &record.conv_shape,
            x,
            tmp,
            dx,
            workspace,
        )
    }
}
