//! Residual blocks: the basic block (two 3x3 convolutions) and the bottleneck (1x1, 3x3, 1x1
//! with expansion 4), both as a chain of [`ConvBn`] units with ReLU between them, a shortcut
//! (identity, or a strided 1x1 [`ConvBn`] projection when the shape changes), the join and a
//! final ReLU. The stride sits on the 3x3 convolution (torchvision's ResNet v1.5).

use heapless::{String, Vec};

use crate::backend::{Backend, BufferLen};
use crate::error::{check_len, Error, Result};
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

    /// The scratch a forward and backward over `record` need.
    pub fn needs<B: Backend>(&self, backend: &B, record: &BlockRecord<B>) -> ScratchNeeds {
        self.needs_without_input_grad(backend, record)
            .max(ScratchNeeds {
                activation: record.in_len,
                conv_workspace: 0,
            })
    }

    /// The scratch a forward and a backward with no input gradient (`dx` of `None`) need: no
    /// input-sized temporary, since only the gradient through the shortcut is input-sized.
    pub fn needs_without_input_grad<B: Backend>(
        &self,
        backend: &B,
        record: &BlockRecord<B>,
    ) -> ScratchNeeds {
        let mut needs = ScratchNeeds {
            activation: record.out_len,
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
    /// temporary) to `dx` (written; `None` when nothing upstream learns, as for a block on a
    /// frozen prefix, which skips both data gradients), accumulating the parameter gradients.
    /// `x` is the block input the forward saw; `tmp` and `ws` are the pass's
    /// [`Scratch`](crate::nn::Scratch) temporaries and convolution workspace.
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        grads: &mut TensorSet<B>,
        record: &BlockRecord<B>,
        x: &B::Buffer,
        dy: &mut B::Buffer,
        mut dx: Option<&mut B::Buffer>,
        tmp: &mut [B::Buffer; 3],
        ws: &mut B::Buffer,
    ) -> Result<()> {
        if let Some(dx) = &dx {
            check_len("block input gradient", dx.len(), record.in_len)?;
        }
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
                    dx.as_deref_mut(),
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
        // The gradient through the shortcut: the projection's input gradient, or the join's.
        let shortcut_grad: &B::Buffer = match (&self.downsample, &record.downsample) {
            (Some(d), Some(rec)) => {
                let into = dx.is_some().then_some(&mut *unit_in);
                d.backward(backend, params, grads, rec, x, d_join, into, conv_grad, ws)?;
                unit_in
            }
            _ => d_join,
        };
        match dx {
            Some(dx) => residual_backward_into(backend, shortcut_grad, dx, record.in_len),
            None => Ok(()),
        }
    }
}

/// Plans a chain of blocks over `[batch, c, height, width]` inputs (each block reading the
/// one before, the first `height x width`), its batch norms per `groups`.
pub fn chain_plan<B: Backend, const N: usize>(
    blocks: &[ResidualBlock],
    backend: &B,
    batch: usize,
    (height, width): (usize, usize),
    groups: StatGroups,
) -> Result<Vec<BlockRecord<B>, N>> {
    let mut records: Vec<BlockRecord<B>, N> = Vec::new();
    for block in blocks {
        let (_, h, w) = records.last().map_or((0, height, width), |r| r.out_dims);
        let record = block.plan(backend, batch, h, w, groups)?;
        records.push(record).map_err(|_| Error::InvalidArgument {
            what: "block records",
            reason: "more blocks than the record's capacity",
        })?;
    }
    Ok(records)
}

/// Training- or inference-mode forward through a chain of blocks, each reading the output of
/// the one before; the first reads `input`. Each output stays in its record.
pub fn chain_forward<B: Backend>(
    blocks: &[ResidualBlock],
    records: &mut [BlockRecord<B>],
    backend: &B,
    params: &TensorSet<B>,
    mut mode: BnMode<'_, B>,
    input: &B::Buffer,
    tmp: &mut [B::Buffer; 3],
    ws: &mut B::Buffer,
) -> Result<()> {
    for (i, block) in blocks.iter().enumerate() {
        let (before, rest) = records.split_at_mut(i);
        let x = before.last().map_or(input, |prev| &prev.out);
        let record = rest.first_mut().ok_or(Error::InvalidArgument {
            what: "block records",
            reason: "fewer than the blocks",
        })?;
        block.forward(backend, params, mode.reborrow(), record, x, tmp, ws)?;
    }
    Ok(())
}

/// Backward through a chain of blocks (forwarded by [`chain_forward`] from `input`), last
/// block first, accumulating every parameter gradient. `grad[0]` holds the gradient at the
/// last output on entry; the two buffers alternate between blocks. With `input_grad`, the
/// gradient at `input` is computed and the buffer holding it is returned; without (a chain on
/// a frozen prefix), the first block skips its data gradients and the returned buffer holds
/// nothing of use.
pub fn chain_backward<'g, B: Backend>(
    blocks: &[ResidualBlock],
    records: &[BlockRecord<B>],
    backend: &B,
    params: &TensorSet<B>,
    grads: &mut TensorSet<B>,
    input: &B::Buffer,
    grad: &'g mut [B::Buffer; 2],
    input_grad: bool,
    tmp: &mut [B::Buffer; 3],
    ws: &mut B::Buffer,
) -> Result<&'g mut B::Buffer> {
    check_len("block records", records.len(), blocks.len())?;
    let [g0, g1] = grad;
    let (mut dy, mut dx) = (g0, g1);
    for i in (0..blocks.len()).rev() {
        let x = if i == 0 { input } else { &records[i - 1].out };
        let into = (i > 0 || input_grad).then_some(&mut *dx);
        blocks[i].backward(backend, params, grads, &records[i], x, dy, into, tmp, ws)?;
        core::mem::swap(&mut dy, &mut dx);
    }
    Ok(dy)
}
