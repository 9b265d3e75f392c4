//! An encoder cut at a stage, for fine-tuning its tail on a frozen prefix.
//!
//! Cut after stage k, the encoder of a [`ResNetConfig`] is two networks that register between
//! them exactly the tensors of one [`Encoder`](crate::nn::Encoder), under the same names and
//! in the same order:
//!
//! - the **prefix**, a [`ResNet`] of `config.cut(k)` (the stem and stages 1..=k, torchvision's
//!   `layer1` to `layer{k}`), run in inference mode by a caller that keeps it frozen: its own
//!   layouts, its own tensor sets, no gradient, no record kept for a backward;
//! - the **tail**, an [`EncoderTail`]: stages k+1.., global average pooling, the projection
//!   head and L2 normalisation, trained on the prefix's feature maps.
//!
//! The tail's backward stops at its first block's parameters: nothing upstream learns, so the
//! data gradients into the prefix's features are never computed, and the scratch the tail
//! needs is sized by its own outputs ([`EncoderTail::needs`]), not by the (larger) feature map
//! it reads. Both take their block capacity as a type parameter, as `ResNet` does, so a
//! microcontroller keeps room for its two or three blocks rather than for ResNet-50's 16.
//! [`crate::train::TailStep`] is the DSCL step over such a pair.

use heapless::Vec;

use crate::backend::Backend;
use crate::error::{ensure, Result};
use crate::nn::batch_norm::{BnMode, StatGroups};
use crate::nn::block::{chain_backward, chain_forward, chain_plan, BlockRecord, ResidualBlock};
use crate::nn::conv_bn::ScratchNeeds;
use crate::nn::head::{EmbeddingRecord, ProjectionHead};
use crate::nn::pool::GlobalAvgPool;
use crate::nn::resnet::{stage_blocks, ResNet, ResNetConfig, MAX_BLOCKS};
use crate::nn::scratch::Scratch;
use crate::nn::tensors::{TensorLayout, TensorSet};

/// An encoder cut after a stage: the prefix, which stays frozen, and the tail, which learns.
/// Built by [`ResNet::new`] on `config.cut(k)` and [`EncoderTail::new`] on `config` after
/// `k`, each with its own layouts (see the module's documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct CutEncoder<const PREFIX: usize = MAX_BLOCKS, const TAIL: usize = MAX_BLOCKS> {
    pub prefix: ResNet<PREFIX>,
    pub tail: EncoderTail<TAIL>,
}

/// The stages of a backbone after stage `from_stage` (counted from 1, as torchvision names
/// `layer1`..: the tail starts at `layer{from_stage + 1}`) with the projection head: the
/// trainable part of an encoder cut there.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderTail<const BLOCKS: usize = MAX_BLOCKS> {
    pub blocks: Vec<ResidualBlock, BLOCKS>,
    pub head: ProjectionHead,
}

/// One pass through the tail: every block's activations, the pooled features, then the
/// head's, the normalisation's and the normalised embeddings `[batch, dim]`.
pub struct TailRecord<B: Backend, const BLOCKS: usize = MAX_BLOCKS> {
    pub blocks: Vec<BlockRecord<B>, BLOCKS>,
    pub gap: GlobalAvgPool,
    pub pooled: B::Buffer,
    pub embedding: EmbeddingRecord<B>,
}

impl<B: Backend, const BLOCKS: usize> TailRecord<B, BLOCKS> {
    /// `[batch, dim]`: the unit embeddings of the last forward.
    pub fn embeddings(&self) -> &B::Buffer {
        &self.embedding.embeddings
    }
}

impl<const BLOCKS: usize> EncoderTail<BLOCKS> {
    /// Registers the tensors of `config`'s stages after `from_stage` and a
    /// `channels -> channels -> embedding_dim` head in `params` and `state`: with a prefix
    /// registered from `config.cut(from_stage)` first, the tensors of
    /// `Encoder::new(config, embedding_dim)`, in its order.
    pub fn new(
        config: ResNetConfig,
        from_stage: usize,
        embedding_dim: usize,
        params: &mut TensorLayout,
        state: &mut TensorLayout,
    ) -> Result<Self> {
        ensure(
            from_stage >= 1 && from_stage < config.stages,
            "encoder cut",
            "must leave at least one stage on each side",
        )?;
        let blocks = stage_blocks(&config, from_stage..config.stages, params, state)?;
        let head = ProjectionHead::new(params, config.feature_channels(), embedding_dim)?;
        Ok(EncoderTail { blocks, head })
    }

    /// Channels of the prefix's feature map, which the tail reads.
    pub fn in_channels(&self) -> usize {
        self.blocks
            .first()
            .map_or(self.head.fc1.in_features, |b| b.in_channels)
    }

    pub fn embedding_dim(&self) -> usize {
        self.head.out_dim()
    }

    /// Plans a pass over `[batch, in_channels, height, width]` feature maps of the prefix.
    pub fn plan<B: Backend>(
        &self,
        backend: &B,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<TailRecord<B, BLOCKS>> {
        ensure(batch >= 1, "tail batch", "must be at least 1")?;
        let blocks = chain_plan(
            &self.blocks,
            backend,
            batch,
            (height, width),
            StatGroups::WHOLE,
        )?;
        let input = (self.in_channels(), height, width);
        let (channels, h, w) = blocks.last().map_or(input, |b| b.out_dims);
        Ok(TailRecord {
            blocks,
            gap: GlobalAvgPool {
                batch,
                channels,
                spatial: h * w,
            },
            pooled: backend.alloc(batch * channels)?,
            embedding: self.head.plan_embedding(backend, batch)?,
        })
    }

    /// The scratch a forward and backward over `record` need: the first block's without its
    /// input gradient, which the backward never computes.
    pub fn needs<B: Backend>(&self, backend: &B, record: &TailRecord<B, BLOCKS>) -> ScratchNeeds {
        let mut needs = ScratchNeeds {
            activation: 0,
            conv_workspace: 0,
        };
        for (i, (block, rec)) in self.blocks.iter().zip(&record.blocks).enumerate() {
            needs = needs.max(match i {
                0 => block.needs_without_input_grad(backend, rec),
                _ => block.needs(backend, rec),
            });
        }
        needs
    }

    /// Training-mode forward of the prefix's feature maps `x` (batch statistics; the running
    /// statistics in `state` advance): `record.embeddings() = normalise(head(pool(blocks(x))))`,
    /// as `Encoder::forward` after the prefix.
    pub fn forward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        state: &mut TensorSet<B>,
        record: &mut TailRecord<B, BLOCKS>,
        x: &B::Buffer,
        scratch: &mut Scratch<B>,
    ) -> Result<()> {
        chain_forward(
            &self.blocks,
            &mut record.blocks,
            backend,
            params,
            BnMode::Train(state),
            x,
            &mut scratch.tmp,
            &mut scratch.conv_workspace,
        )?;
        let map = match record.blocks.last() {
            Some(last) => &last.out,
            None => x,
        };
        record.gap.forward(backend, map, &mut record.pooled)?;
        self.head
            .embed(backend, params, &mut record.embedding, &record.pooled)
    }

    /// Backward from `d_embeddings` down to the first block's parameters, accumulating into
    /// `grads`; `x` is the feature map the forward read, which gets no gradient.
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        grads: &mut TensorSet<B>,
        record: &mut TailRecord<B, BLOCKS>,
        x: &B::Buffer,
        d_embeddings: &B::Buffer,
        scratch: &mut Scratch<B>,
    ) -> Result<()> {
        self.head.embed_backward(
            backend,
            params,
            grads,
            &mut record.embedding,
            &record.pooled,
            d_embeddings,
        )?;
        let Scratch {
            tmp,
            grad,
            conv_workspace,
            ..
        } = scratch;
        record
            .gap
            .backward(backend, &record.embedding.d_pooled, &mut grad[0])?;
        chain_backward(
            &self.blocks,
            &record.blocks,
            backend,
            params,
            grads,
            x,
            grad,
            false,
            tmp,
            conv_workspace,
        )?;
        Ok(())
    }
}
