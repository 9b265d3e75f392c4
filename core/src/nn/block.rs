//! Residual blocks: the basic block (two 3x3 convolutions) and the bottleneck (1x1, 3x3, 1x1
//! with expansion 4), both as a chain of [`ConvBn`] units with ReLU between them, a shortcut
//! (identity, or a strided 1x1 [`ConvBn`] projection when the shape changes), the join and a
//! final ReLU. The stride sits on the 3x3 convolution (torchvision's ResNet v1.5).

use heapless::{String, Vec};

use crate::backend::{Backend, BufferLen};
use crate::error::{check_len, Result};
use crate::nn::activation::{
    relu_backward, relu_forward, residual_backward_into, residual_forward,
};
use crate::nn::batch_norm::{BnMode, StatGroups};
use crate::nn::conv_bn::{ConvBn, ConvBnRecord, ScratchNeeds};
use crate::nn::tensors::{join_name, TensorLayout, TensorSet, MAX_NAME_LEN};

/// Units in the longest residual branch (the bottleneck's three).
pub const MAX_UNITS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    Basic,
    Bottleneck,
}

impl BlockKind {
    /// Output channels per unit of stage width.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResidualBlock {
    pub units: Vec<ConvBn, MAX_UNITS>,
    pub downsample: Option<ConvBn>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub stride: usize,
}

/// One pass's record of a block: each unit's record, the ReLU outputs between units (inputs
/// of the next unit, kept for backward), the shortcut projection's record and the block output.
pub struct BlockRecord<B: Backend> {
    pub units: Vec<ConvBnRecord<B>, MAX_UNITS>,
    pub inner: Vec<B::Buffer, MAX_UNITS>,
    pub downsample: Option<ConvBnRecord<B>>,
    pub out: B::Buffer,
    pub in_len: usize,
    pub out_len: usize,
    /// (channels, height, width) of the output.
    pub out_dims: (usize, usize, usize),
}

fn unit_name(prefix: &str, kind: &str, index: usize) -> Result<String<MAX_NAME_LEN>> {
    let mut suffix: String<8> = String::new();
    let digit = char::from(b'1' + index as u8);
    // "conv" / "bn" plus one digit always fits in 8 bytes.
    let _ = suffix.push_str(kind);
    let _ = suffix.push(digit);
    join_name(prefix, &suffix)
}

impl ResidualBlock {
    /// A block named `prefix` (for example `layer2.0`) taking `in_channels` to
    /// `width * expansion` channels; `zero_init_residual` starts its last norm's gamma at 0.
    pub fn new(
        params: &mut TensorLayout,
        state: &mut TensorLayout,
        prefix: &str,
        kind: BlockKind,
        in_channels: usize,
        width: usize,
        stride: usize,
        zero_init_residual: bool,
    ) -> Result<Self> {
        let out_channels = width * kind.expansion();
        // (in, out, kernel, stride) of each unit.
        let plan: &[(usize, usize, usize, usize)] = match kind {
            BlockKind::Basic => &[(in_channels, width, 3, stride), (width, width, 3, 1)],
            BlockKind::Bottleneck => &[
                (in_channels, width, 1, 1),
                (width, width, 3, stride),
                (width, out_channels, 1, 1),
            ],
        };
        let mut units = Vec::new();
        for (u, &(cin, cout, k, s)) in plan.iter().enumerate() {
            let last = u + 1 == plan.len();
            let unit = ConvBn::new(
                params,
                state,
                &unit_name(prefix, "conv", u)?,
                &unit_name(prefix, "bn", u)?,
                cin,
                cout,
                k,
                s,
                last && zero_init_residual,
            )?;
            let _ = units.push(unit); // at most MAX_UNITS by construction
        }
        let downsample = if stride != 1 || in_channels != out_channels {
            Some(ConvBn::new(
                params,
                state,
                &join_name(prefix, "downsample.0")?,
                &join_name(prefix, "downsample.1")?,
                in_channels,
                out_channels,
                1,
                stride,
                false,
            )?)
        } else {
            None
        };
        Ok(ResidualBlock {
            units,
            downsample,
            in_channels,
            out_channels,
            stride,
        })
    }

    /// Plans the record for a `[batch, in_channels, height, width]` input, its batch norms
    /// with the statistics groups `groups`.
    pub fn plan<B: Backend>(
        &self,
        backend: &B,
        batch: usize,
        height: usize,
        width: usize,
        groups: StatGroups,
    ) -> Result<BlockRecord<B>> {
        let mut units = Vec::new();
        let mut inner = Vec::new();
        let (mut h, mut w) = (height, width);
        for (u, unit) in self.units.iter().enumerate() {
            let rec = unit.plan(backend, batch, h, w, groups)?;
            let (_, oh, ow) = rec.out_dims();
            (h, w) = (oh, ow);
            if u + 1 < self.units.len() {
                let _ = inner.push(backend.alloc(rec.out_len())?);
            }
            let _ = units.push(rec);
        }
        let downsample = match &self.downsample {
            Some(d) => Some(d.plan(backend, batch, height, width, groups)?),
            None => None,
        };
        let out_len = batch * self.out_channels * h * w;
        Ok(BlockRecord {
            units,
            inner,
            downsample,
            out: backend.alloc(out_len)?,
            in_len: batch * self.in_channels * height * width,
            out_len,
            out_dims: (self.out_channels, h, w),
        })
    }

    pub fn needs<B: Backend>(&self, backend: &B, record: &BlockRecord<B>) -> ScratchNeeds {
        let mut needs = ScratchNeeds {
            activation: record.in_len.max(record.out_len),
            conv_workspace: 0,
        };
        for (unit, rec) in self.units.iter().zip(record.units.iter()) {
            needs = needs.max(unit.needs(backend, rec));
        }
        if let (Some(d), Some(rec)) = (&self.downsample, &record.downsample) {
            needs = needs.max(d.needs(backend, rec));
        }
        needs
    }

    /// Forward of `x` into `record.out`, batch norm per `mode`.
    pub fn forward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        mut mode: BnMode<'_, B>,
        record: &mut BlockRecord<B>,
        x: &B::Buffer,
        tmp: &mut [B::Buffer; 3],
        ws: &mut B::Buffer,
    ) -> Result<()> {
        check_len("block input", x.len(), record.in_len)?;
        let n = self.units.len();
        let [branch, shortcut, joined] = tmp;
        for u in 0..n {
            let rec = &mut record.units[u];
            let input = if u == 0 { x } else { &record.inner[u - 1] };
            self.units[u].forward(backend, params, mode.reborrow(), rec, input, branch, ws)?;
            if u + 1 < n {
                let len = rec.out_len();
                relu_forward(backend, branch, &mut record.inner[u], len)?;
            }
        }
        let len = record.out_len;
        match (&self.downsample, &mut record.downsample) {
            (Some(d), Some(rec)) => {
                d.forward(backend, params, mode.reborrow(), rec, x, shortcut, ws)?;
                residual_forward(backend, branch, shortcut, joined, len)?;
            }
            _ => residual_forward(backend, branch, x, joined, len)?,
        }
        relu_forward(backend, joined, &mut record.out, len)
    }

    /// Backward from `dy` (gradient at the block output; overwritten, its storage reused as a
    /// temporary) to `dx` (written), accumulating the parameter gradients. `x` is the block input the forward saw; `tmp` and `ws` are the
    /// pass's [`Scratch`](crate::nn::Scratch) temporaries and convolution workspace.
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        grads: &mut TensorSet<B>,
        record: &BlockRecord<B>,
        x: &B::Buffer,
        dy: &mut B::Buffer,
        dx: &mut B::Buffer,
        tmp: &mut [B::Buffer; 3],
        ws: &mut B::Buffer,
    ) -> Result<()> {
        check_len("block input gradient", dx.len(), record.in_len)?;
        let n = self.units.len();
        // d_join: gradient at the join, needed by the branch and the shortcut; conv_grad: a
        // unit's conv-output gradient; unit_in: gradient at a unit's input (a ReLU output);
        // unit_out: that gradient after the ReLU, i.e. at the previous unit's norm output.
        // `dy` is consumed by the first ReLU backward, so its storage serves as unit_out.
        let [d_join, conv_grad, unit_in] = tmp;
        relu_backward(backend, &record.out, dy, d_join, record.out_len)?;
        let unit_out = dy;

        for u in (0..n).rev() {
            let rec = &record.units[u];
            if u + 1 < n {
                // unit_in holds the gradient at inner[u], this unit's (ReLU'd) output.
                relu_backward(backend, &record.inner[u], unit_in, unit_out, rec.out_len())?;
            }
            let dy_unit: &B::Buffer = if u + 1 == n { d_join } else { unit_out };
            if u == 0 {
                self.units[u].backward(
                    backend,
                    params,
                    grads,
                    rec,
                    x,
                    dy_unit,
                    Some(&mut *dx),
                    conv_grad,
                    ws,
                )?;
            } else {
                self.units[u].backward(
                    backend,
                    params,
                    grads,
                    rec,
                    &record.inner[u - 1],
                    dy_unit,
                    Some(&mut *unit_in),
                    conv_grad,
                    ws,
                )?;
            }
        }
        match (&self.downsample, &record.downsample) {
            (Some(d), Some(rec)) => {
                d.backward(
                    backend,
                    params,
                    grads,
                    rec,
                    x,
                    d_join,
                    Some(&mut *unit_in),
                    conv_grad,
                    ws,
                )?;
                residual_backward_into(backend, unit_in, dx, record.in_len)
            }
            _ => residual_backward_into(backend, d_join, dx, record.in_len),
        }
    }
}
