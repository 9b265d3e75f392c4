//! The encoder of DSCL: a ResNet backbone, the projection head, and row L2-normalisation of
//! the embeddings. One [`Encoder`] describes the network; [`EncoderRecord`] is one pass.

use crate::backend::Backend;
use crate::error::Result;
use crate::nn::batch_norm::StatGroups;
use crate::nn::conv_bn::ScratchNeeds;
use crate::nn::head::{EmbeddingRecord, ProjectionHead};
use crate::nn::resnet::{ResNet, ResNetConfig, ResNetRecord};
use crate::nn::scratch::Scratch;
use crate::nn::tensors::{TensorLayout, TensorSet};

/// Backbone + projection head, with the layouts of its parameters and running statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoder {
    pub backbone: ResNet,
    pub head: ProjectionHead,
    pub params: TensorLayout,
    pub state: TensorLayout,
}

/// One pass through the encoder: backbone activations, then the head's, the normalisation's
/// and the normalised embeddings `[rows, dim]`.
pub struct EncoderRecord<B: Backend> {
    pub backbone: ResNetRecord<B>,
    pub embedding: EmbeddingRecord<B>,
}

impl<B: Backend> EncoderRecord<B> {
    /// `[rows, dim]`: the unit embeddings of the last forward.
    pub fn embeddings(&self) -> &B::Buffer {
        &self.embedding.embeddings
    }
}

impl Encoder {
    /// The backbone of `config` with a `channels -> channels -> embedding_dim` head.
    pub fn new(config: ResNetConfig, embedding_dim: usize) -> Result<Self> {
        let mut params = TensorLayout::new();
        let mut state = TensorLayout::new();
        let backbone = ResNet::new(config, &mut params, &mut state)?;
        let head = ProjectionHead::new(&mut params, backbone.feature_channels(), embedding_dim)?;
        Ok(Encoder {
            backbone,
            head,
            params,
            state,
        })
    }

    pub fn embedding_dim(&self) -> usize {
        self.head.out_dim()
    }

    /// Plans a pass over `[batch, 3, height, width]` images, one set of batch statistics.
    pub fn plan<B: Backend>(
        &self,
        backend: &B,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<EncoderRecord<B>> {
        self.plan_grouped(backend, batch, height, width, StatGroups::WHOLE)
    }

    /// Plans a pass over `[batch, 3, height, width]` images whose batch norms use the
    /// statistics groups `groups` (the head has no batch norm).
    pub fn plan_grouped<B: Backend>(
        &self,
        backend: &B,
        batch: usize,
        height: usize,
        width: usize,
        groups: StatGroups,
    ) -> Result<EncoderRecord<B>> {
        Ok(EncoderRecord {
            backbone: self
                .backbone
                .plan_grouped(backend, batch, height, width, groups)?,
            embedding: self.head.plan_embedding(backend, batch)?,
        })
    }

    pub fn needs<B: Backend>(&self, backend: &B, record: &EncoderRecord<B>) -> ScratchNeeds {
        self.backbone.needs(backend, &record.backbone)
    }

    /// Training-mode forward: `record.embeddings() = normalise(head(pool(backbone(images))))`
    /// (see [`ProjectionHead::embed`]).
    pub fn forward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        state: &mut TensorSet<B>,
        record: &mut EncoderRecord<B>,
        images: &B::Buffer,
        scratch: &mut Scratch<B>,
    ) -> Result<()> {
        self.backbone.forward(
            backend,
            params,
            state,
            &mut record.backbone,
            images,
            scratch,
        )?;
        self.head.embed(
            backend,
            params,
            &mut record.embedding,
            &record.backbone.pooled,
        )
    }

    /// Backward from `d_embeddings` (gradient at the normalised embeddings), accumulating into
    /// `grads`.
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        grads: &mut TensorSet<B>,
        record: &mut EncoderRecord<B>,
        images: &B::Buffer,
        d_embeddings: &B::Buffer,
        scratch: &mut Scratch<B>,
    ) -> Result<()> {
        self.head.embed_backward(
            backend,
            params,
            grads,
            &mut record.embedding,
            &record.backbone.pooled,
            d_embeddings,
        )?;
        self.backbone.backward(
            backend,
            params,
            grads,
            &record.backbone,
            &record.embedding.d_pooled,
            images,
            scratch,
        )
    }
}
