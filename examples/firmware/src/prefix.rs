//! The frozen prefix: the stem, `layer1` and `layer2` of the core's tiny ResNet
//! (`ResNetConfig::tiny`), registered with the same calls, names and order as `ResNet::new`
//! (a host test checks it), so a tiny ResNet's weights load into it by name.
//!
//! It is built from the core's layers rather than as a two-stage `ResNet` because `ResNet`
//! and its record keep room for 16 blocks (about 10 KB of fixed-capacity metadata on a 32-bit
//! target), a tenth of this firmware's stack. Shared with `build.rs`, which pretrains it.

use dscl_core::backend::Backend;
use dscl_core::error::Result;
use dscl_core::nn::activation::relu_forward;
use dscl_core::nn::batch_norm::StatGroups;
use dscl_core::nn::block::BlockRecord;
use dscl_core::nn::conv_bn::ConvBnRecord;
use dscl_core::nn::{
    BlockKind, BnMode, ConvBn, ResidualBlock, Scratch, ScratchNeeds, TensorLayout, TensorSet,
};

/// Channels of the stem and `layer1`, and of `layer2` (the tiny ResNet's first two widths).
pub const WIDTHS: [usize; 2] = [8, 16];
/// Overall stride of the prefix (the stem keeps the size, `layer2` halves it).
pub const STRIDE: usize = 2;

#[derive(Clone, Debug, PartialEq)]
pub struct Prefix {
    pub stem: ConvBn,
    /// `layer1.0` and `layer2.0`.
    pub blocks: [ResidualBlock; 2],
}

/// One pass's activations of the prefix.
pub struct PrefixRecord<B: Backend> {
    stem: ConvBnRecord<B>,
    /// The stem's ReLU output (`layer1`'s input).
    stem_out: B::Buffer,
    blocks: [BlockRecord<B>; 2],
}

impl<B: Backend> PrefixRecord<B> {
    /// `[batch, 16, h / 2, w / 2]`: the output of the last forward.
    pub fn features(&self) -> &B::Buffer {
        &self.blocks[1].out
    }
    /// (channels, height, width) of the features.
    pub fn feature_dims(&self) -> (usize, usize, usize) {
        self.blocks[1].out_dims
    }
}

impl Prefix {
    /// Registers the prefix's tensors in `params` and `state`, as `ResNet::new` does for the
    /// tiny ResNet (`conv1`, `bn1`, `layer1.0.*`, `layer2.0.*`). Residual branches start live
    /// (no zero-init of their last norm); the weights are loaded afterwards anyway.
    pub fn new(params: &mut TensorLayout, state: &mut TensorLayout) -> Result<Self> {
        let [w1, w2] = WIDTHS;
        let stem = ConvBn::new(params, state, "conv1", "bn1", 3, w1, 3, 1, false)?;
        let layer1 = ResidualBlock::new(
            params,
            state,
            "layer1.0",
            BlockKind::Basic,
            w1,
            w1,
            1,
            false,
        )?;
        let layer2 = ResidualBlock::new(
            params,
            state,
            "layer2.0",
            BlockKind::Basic,
            w1,
            w2,
            STRIDE,
            false,
        )?;
        Ok(Prefix {
            stem,
            blocks: [layer1, layer2],
        })
    }

    /// Plans a pass over `[batch, 3, height, width]` images.
    pub fn plan<B: Backend>(
        &self,
        backend: &B,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<PrefixRecord<B>> {
        let stem = self
            .stem
            .plan(backend, batch, height, width, StatGroups::WHOLE)?;
        let (_, h, w) = stem.out_dims();
        let stem_out = backend.alloc(stem.out_len())?;
        let layer1 = self.blocks[0].plan(backend, batch, h, w, StatGroups::WHOLE)?;
        let (_, h, w) = layer1.out_dims;
        let layer2 = self.blocks[1].plan(backend, batch, h, w, StatGroups::WHOLE)?;
        Ok(PrefixRecord {
            stem,
            stem_out,
            blocks: [layer1, layer2],
        })
    }

    /// The scratch a pass over `record` needs.
    pub fn needs<B: Backend>(&self, backend: &B, record: &PrefixRecord<B>) -> ScratchNeeds {
        let mut needs = self.stem.needs(backend, &record.stem);
        for (block, rec) in self.blocks.iter().zip(record.blocks.iter()) {
            needs = needs.max(block.needs(backend, rec));
        }
        needs
    }

    /// Inference-mode forward (batch norm with the running statistics in `state`), as
    /// `ResNet::forward_inference` up to `layer2`; the features stay in `record`.
    pub fn forward_inference<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        state: &TensorSet<B>,
        record: &mut PrefixRecord<B>,
        images: &B::Buffer,
        scratch: &mut Scratch<B>,
    ) -> Result<()> {
        let [bn_out, ..] = &mut scratch.tmp;
        self.stem.forward(
            backend,
            params,
            BnMode::Inference(state),
            &mut record.stem,
            images,
            bn_out,
            &mut scratch.conv_workspace,
        )?;
        relu_forward(backend, bn_out, &mut record.stem_out, record.stem.out_len())?;
        let [layer1, layer2] = &mut record.blocks;
        self.blocks[0].forward(
            backend,
            params,
            BnMode::Inference(state),
            layer1,
            &record.stem_out,
            &mut scratch.tmp,
            &mut scratch.conv_workspace,
        )?;
        self.blocks[1].forward(
            backend,
            params,
            BnMode::Inference(state),
            layer2,
            &layer1.out,
            &mut scratch.tmp,
            &mut scratch.conv_workspace,
        )
    }
}
