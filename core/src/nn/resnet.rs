//! ResNet backbones in torchvision's layout: ResNet-18/34 (basic blocks), ResNet-50
//! (bottlenecks), the CIFAR-style ResNet-32 and a tiny variant for microcontrollers.
//!
//! The network is metadata (shapes and tensor ids); its weights live in a [`TensorSet`] made
//! from [`ResNet::params`], its batch-norm statistics in one made from [`ResNet::state`], and
//! each pass keeps its activations in a [`ResNetRecord`] planned once for its input size.

use core::ops::Range;

use heapless::{String, Vec};

use crate::backend::{Backend, BufferLen};
use crate::desc::PoolShape;
use crate::error::{check_len, ensure, Error, Result};
use crate::nn::activation::{relu_backward, relu_forward};
use crate::nn::batch_norm::{BnMode, StatGroups};
use crate::nn::block::{chain_backward, chain_forward, chain_plan, BlockRecord, ResidualBlock};
use crate::nn::conv_bn::{ConvBn, ConvBnRecord, ScratchNeeds};
use crate::nn::pool::{GlobalAvgPool, MaxPool2d};
use crate::nn::scratch::Scratch;
use crate::nn::tensors::{TensorLayout, TensorSet, MAX_NAME_LEN};

mod config;

pub use config::{ResNetConfig, Stem, MAX_STAGES};

/// Most residual blocks a network may have (ResNet-34 and ResNet-50 have 16): the default
/// capacity of a [`ResNet`] and its records.
pub const MAX_BLOCKS: usize = 16;

/// A planned backbone of at most `BLOCKS` residual blocks. The capacity is a type parameter
/// because the network and each record keep fixed-capacity storage for that many blocks (about
/// 10 KB at 16 on a 32-bit target): a microcontroller that runs the first stages of a tiny
/// ResNet names a capacity of 2.
#[derive(Clone, Debug, PartialEq)]
pub struct ResNet<const BLOCKS: usize = MAX_BLOCKS> {
    pub config: ResNetConfig,
    pub stem: ConvBn,
    pub max_pool: Option<MaxPool2d>,
    pub blocks: Vec<ResidualBlock, BLOCKS>,
}

/// One pass's activations of the stem.
pub struct StemRecord<B: Backend> {
    pub conv_bn: ConvBnRecord<B>,
    /// The stem's ReLU output.
    pub act: B::Buffer,
    /// Max-pool output and argmax (ImageNet stem only).
    pub pool: Option<(PoolShape, B::Buffer, B::IndexBuffer)>,
    pub out_len: usize,
    pub out_dims: (usize, usize, usize),
}

impl<B: Backend> StemRecord<B> {
    /// The stem's output: the max-pool output, or the ReLU output when there is no pool.
    pub fn output(&self) -> &B::Buffer {
        match &self.pool {
            Some((_, y, _)) => y,
            None => &self.act,
        }
    }
}

/// One pass's activations of the whole backbone at one input size.
pub struct ResNetRecord<B: Backend, const BLOCKS: usize = MAX_BLOCKS> {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub stem: StemRecord<B>,
    pub blocks: Vec<BlockRecord<B>, BLOCKS>,
    pub gap: GlobalAvgPool,
    /// Globally pooled features `[batch, feature_channels]`.
    pub pooled: B::Buffer,
}

impl<B: Backend, const BLOCKS: usize> ResNetRecord<B, BLOCKS> {
    /// The final feature map `[batch, channels, h, w]` of the last forward.
    pub fn feature_map(&self) -> &B::Buffer {
        match self.blocks.last() {
            Some(b) => &b.out,
            None => self.stem.output(),
        }
    }
    /// (channels, height, width) of the final feature map.
    pub fn feature_dims(&self) -> (usize, usize, usize) {
        match self.blocks.last() {
            Some(b) => b.out_dims,
            None => self.stem.out_dims,
        }
    }
    pub fn input_len(&self) -> usize {
        self.batch * 3 * self.height * self.width
    }
}

fn stage_name(stage: usize, block: usize) -> Result<String<MAX_NAME_LEN>> {
    let mut name = String::new();
    let too_long = Error::InvalidArgument {
        what: "block name",
        reason: "too long",
    };
    core::fmt::write(&mut name, format_args!("layer{}.{}", stage + 1, block))
        .map_err(|_| too_long)?;
    Ok(name)
}

/// Registers the blocks of `config`'s stages `stages` (torchvision's names; the first block of
/// every stage after the first has stride 2), the first taking the channels that the stage
/// before gives (the stem's, for stage 0). Checks the stages and the block capacity.
pub(crate) fn stage_blocks<const BLOCKS: usize>(
    config: &ResNetConfig,
    stages: Range<usize>,
    params: &mut TensorLayout,
    state: &mut TensorLayout,
) -> Result<Vec<ResidualBlock, BLOCKS>> {
    ensure(
        (1..=MAX_STAGES).contains(&config.stages)
            && stages.start < stages.end
            && stages.end <= config.stages,
        "resnet stages",
        "must be 1 to 4, and a range of them not empty",
    )?;
    let counts = &config.blocks[stages.clone()];
    ensure(
        counts.iter().all(|&c| c >= 1) && config.widths[stages.clone()].iter().all(|&w| w >= 1),
        "resnet stages",
        "every stage needs at least one block and a positive width",
    )?;
    let total: usize = counts.iter().sum();
    ensure(
        total <= BLOCKS,
        "resnet blocks",
        "more than the network's block capacity",
    )?;
    let mut channels = match stages.start {
        0 => config.stem_channels,
        s => config.widths[s - 1] * config.block.expansion(),
    };
    let mut blocks = Vec::new();
    for (s, &count) in stages.zip(counts) {
        for b in 0..count {
            let stride = if s > 0 && b == 0 { 2 } else { 1 };
            let block = ResidualBlock::new(
                params,
                state,
                &stage_name(s, b)?,
                config.block,
                channels,
                config.widths[s],
                stride,
                config.zero_init_residual,
            )?;
            channels = block.out_channels;
            let _ = blocks.push(block); // total <= BLOCKS checked above
        }
    }
    Ok(blocks)
}

impl<const BLOCKS: usize> ResNet<BLOCKS> {
    /// Registers every tensor of the backbone (torchvision names: `conv1`, `bn1`,
    /// `layerS.B.convU`, `layerS.B.downsample.{0,1}`) in `params` and `state`.
    pub fn new(
        config: ResNetConfig,
        params: &mut TensorLayout,
        state: &mut TensorLayout,
    ) -> Result<Self> {
        ensure(
            (1..=MAX_STAGES).contains(&config.stages),
            "resnet stages",
            "must be 1 to 4",
        )?;
        let (kernel, stride) = match config.stem {
            Stem::ImageNet => (7, 2),
            Stem::Cifar => (3, 1),
        };
        let stem = ConvBn::new(
            params,
            state,
            "conv1",
            "bn1",
            3,
            config.stem_channels,
            kernel,
            stride,
            false,
        )?;
        let max_pool = match config.stem {
            Stem::ImageNet => Some(MaxPool2d {
                kernel: 3,
                stride: 2,
                padding: 1,
            }),
            Stem::Cifar => None,
        };
        let blocks = stage_blocks(&config, 0..config.stages, params, state)?;
        Ok(ResNet {
            config,
            stem,
            max_pool,
            blocks,
        })
    }

    pub fn feature_channels(&self) -> usize {
        self.config.feature_channels()
    }

    /// Plans a pass over `[batch, 3, height, width]` images, one set of batch statistics.
    pub fn plan<B: Backend>(
        &self,
        backend: &B,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<ResNetRecord<B, BLOCKS>> {
        self.plan_grouped(backend, batch, height, width, StatGroups::WHOLE)
    }

    /// Plans a pass over `[batch, 3, height, width]` images whose batch norms use the
    /// statistics groups `groups`.
    pub fn plan_grouped<B: Backend>(
        &self,
        backend: &B,
        batch: usize,
        height: usize,
        width: usize,
        groups: StatGroups,
    ) -> Result<ResNetRecord<B, BLOCKS>> {
        ensure(batch >= 1, "resnet batch", "must be at least 1")?;
        ensure(
            height >= 1 && width >= 1,
            "resnet input",
            "image height and width must be at least 1",
        )?;
        let conv_bn = self.stem.plan(backend, batch, height, width, groups)?;
        let (c, h, w) = conv_bn.out_dims();
        let act = backend.alloc(conv_bn.out_len())?;
        let (pool, out_dims) = match &self.max_pool {
            Some(mp) => {
                let shape = mp.shape(batch, c, h, w);
                let dims = (c, shape.out_height(), shape.out_width());
                let y = backend.alloc(shape.output_len())?;
                let arg = backend.alloc_index(shape.output_len())?;
                (Some((shape, y, arg)), dims)
            }
            None => (None, (c, h, w)),
        };
        let stem = StemRecord {
            conv_bn,
            act,
            pool,
            out_len: batch * out_dims.0 * out_dims.1 * out_dims.2,
            out_dims,
        };
        let blocks = chain_plan(
            &self.blocks,
            backend,
            batch,
            (out_dims.1, out_dims.2),
            groups,
        )?;
        let (channels, h, w) = blocks.last().map_or(out_dims, |b| b.out_dims);
        Ok(ResNetRecord {
            batch,
            height,
            width,
            stem,
            blocks,
            gap: GlobalAvgPool {
                batch,
                channels,
                spatial: h * w,
            },
            pooled: backend.alloc(batch * channels)?,
        })
    }

    /// The scratch a pass over `record` needs.
    pub fn needs<B: Backend>(&self, backend: &B, record: &ResNetRecord<B, BLOCKS>) -> ScratchNeeds {
        let mut needs = self.stem.needs(backend, &record.stem.conv_bn);
        for (block, rec) in self.blocks.iter().zip(record.blocks.iter()) {
            needs = needs.max(block.needs(backend, rec));
        }
        needs
    }

    /// Training-mode forward of `images` (`[batch, 3, height, width]`) through every block and
    /// the global average pool; the final map and pooled features stay in `record`, and the
    /// running statistics in `state` advance.
    pub fn forward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        state: &mut TensorSet<B>,
        record: &mut ResNetRecord<B, BLOCKS>,
        images: &B::Buffer,
        scratch: &mut Scratch<B>,
    ) -> Result<()> {
        self.forward_with(
            backend,
            params,
            BnMode::Train(state),
            record,
            images,
            scratch,
        )
    }

    /// Inference-mode forward (batch norm with the running statistics; evaluation).
    pub fn forward_inference<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        state: &TensorSet<B>,
        record: &mut ResNetRecord<B, BLOCKS>,
        images: &B::Buffer,
        scratch: &mut Scratch<B>,
    ) -> Result<()> {
        self.forward_with(
            backend,
            params,
            BnMode::Inference(state),
            record,
            images,
            scratch,
        )
    }

    fn forward_with<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        mut mode: BnMode<'_, B>,
        record: &mut ResNetRecord<B, BLOCKS>,
        images: &B::Buffer,
        scratch: &mut Scratch<B>,
    ) -> Result<()> {
        check_len("images", images.len(), record.input_len())?;
        let stem = &mut record.stem;
        let [bn_out, ..] = &mut scratch.tmp;
        self.stem.forward(
            backend,
            params,
            mode.reborrow(),
            &mut stem.conv_bn,
            images,
            bn_out,
            &mut scratch.conv_workspace,
        )?;
        relu_forward(backend, bn_out, &mut stem.act, stem.conv_bn.out_len())?;
        if let (Some(mp), Some((shape, y, arg))) = (&self.max_pool, &mut stem.pool) {
            mp.forward(backend, shape, &stem.act, y, arg)?;
        }
        chain_forward(
            &self.blocks,
            &mut record.blocks,
            backend,
            params,
            mode,
            record.stem.output(),
            &mut scratch.tmp,
            &mut scratch.conv_workspace,
        )?;
        let map = match record.blocks.last() {
            Some(b) => &b.out,
            None => record.stem.output(),
        };
        record.gap.forward(backend, map, &mut record.pooled)
    }

    /// Backward from `d_pooled` (gradient at the pooled features, `[batch, channels]`),
    /// accumulating every parameter gradient into `grads`. The images get no gradient.
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        grads: &mut TensorSet<B>,
        record: &ResNetRecord<B, BLOCKS>,
        d_pooled: &B::Buffer,
        images: &B::Buffer,
        scratch: &mut Scratch<B>,
    ) -> Result<()> {
        let Scratch {
            tmp,
            grad,
            conv_workspace: ws,
            ..
        } = scratch;
        record.gap.backward(backend, d_pooled, &mut grad[0])?;
        let dy = chain_backward(
            &self.blocks,
            &record.blocks,
            backend,
            params,
            grads,
            record.stem.output(),
            grad,
            true,
            tmp,
            ws,
        )?;
        // dy: gradient at the stem output.
        let stem = &record.stem;
        let [d_act, d_bn, conv_grad] = tmp;
        let d_act: &B::Buffer = match (&self.max_pool, &stem.pool) {
            (Some(mp), Some((shape, _, arg))) => {
                mp.backward(backend, shape, dy, arg, d_act)?;
                d_act
            }
            _ => dy,
        };
        relu_backward(backend, &stem.act, d_act, d_bn, stem.conv_bn.out_len())?;
        self.stem.backward(
            backend,
            params,
            grads,
            &stem.conv_bn,
            images,
            d_bn,
            None,
            conv_grad,
            ws,
        )
    }
}

/// Per-image sizes, in elements, of what a pass over one image keeps and borrows; each grows
/// linearly with the batch. See [`ResNet::activation_sizes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivationSizes {
    /// Every buffer a [`ResNetRecord`] holds for one image: each convolution's output (the
    /// norm's input), the ReLU outputs between units and after the stem, the max-pool output
    /// and its argmax indices (one index per output), every block's output and the pooled
    /// features. The batch-norm statistics (per channel and group, not per image) are not
    /// counted.
    pub kept: usize,
    /// The largest single activation, as [`ResNet::needs`] sizes the scratch buffers of a pass.
    pub largest: usize,
    /// The largest convolution's column matrix for one image (`in_channels x k x k` by
    /// `out_height x out_width`): what an im2col convolution unfolds per image.
    pub largest_columns: usize,
}

impl<const BLOCKS: usize> ResNet<BLOCKS> {
    /// What a pass over one `height x width` image keeps for backward and borrows, counted
    /// from the layer shapes alone, so a run can size its memory before allocating any of it.
    /// `None` when a count overflows `usize` or a layer cannot take its input at this size
    /// (where [`ResNet::plan`] would refuse).
    pub fn activation_sizes(&self, height: usize, width: usize) -> Option<ActivationSizes> {
        if height == 0 || width == 0 {
            return None;
        }
        let mut sizes = ActivationSizes {
            kept: 0,
            largest: 0,
            largest_columns: 0,
        };
        // The output (channels, height, width) and element count of a ConvBn at an input size.
        let mut conv = |unit: &ConvBn, h: usize, w: usize| -> Option<(usize, usize, usize)> {
            let shape = unit.conv.shape(1, h, w);
            shape.check_shape().ok()?;
            let (oh, ow) = (shape.out_height(), shape.out_width());
            let len = shape.out_channels.checked_mul(oh)?.checked_mul(ow)?;
            let columns = shape
                .in_channels
                .checked_mul(shape.kernel_h)?
                .checked_mul(shape.kernel_w)?
                .checked_mul(oh)?
                .checked_mul(ow)?;
            sizes.largest = sizes.largest.max(len);
            sizes.largest_columns = sizes.largest_columns.max(columns);
            Some((len, oh, ow))
        };
        let mut kept: usize = 0;
        let (stem_len, mut h, mut w) = conv(&self.stem, height, width)?;
        // The convolution output and the ReLU output.
        kept = kept.checked_add(stem_len.checked_mul(2)?)?;
        if let Some(mp) = &self.max_pool {
            let shape = mp.shape(1, self.config.stem_channels, h, w);
            (h, w) = (shape.out_height(), shape.out_width());
            let len = self.config.stem_channels.checked_mul(h)?.checked_mul(w)?;
            // The output and its argmax.
            kept = kept.checked_add(len.checked_mul(2)?)?;
        }
        let mut block_ins = [0usize; BLOCKS];
        let mut block_outs = [0usize; BLOCKS];
        for (i, block) in self.blocks.iter().enumerate() {
            let in_len = block.in_channels.checked_mul(h)?.checked_mul(w)?;
            let (mut uh, mut uw) = (h, w);
            for (u, unit) in block.units.iter().enumerate() {
                let (len, oh, ow) = conv(unit, uh, uw)?;
                (uh, uw) = (oh, ow);
                kept = kept.checked_add(len)?;
                if u + 1 < block.units.len() {
                    kept = kept.checked_add(len)?;
                }
            }
            if let Some(d) = &block.downsample {
                let (len, _, _) = conv(d, h, w)?;
                kept = kept.checked_add(len)?;
            }
            (h, w) = (uh, uw);
            let out_len = block.out_channels.checked_mul(h)?.checked_mul(w)?;
            kept = kept.checked_add(out_len)?;
            block_ins[i] = in_len;
            block_outs[i] = out_len;
        }
        kept = kept.checked_add(self.feature_channels())?;
        let blocks = self.blocks.len();
        for len in block_ins[..blocks].iter().chain(&block_outs[..blocks]) {
            sizes.largest = sizes.largest.max(*len);
        }
        sizes.kept = kept;
        Some(sizes)
    }

    /// Elements of every activation a pass keeps per `image_side x image_side` image
    /// ([`ActivationSizes::kept`]).
    pub fn activation_len(&self, image_side: usize) -> Option<usize> {
        self.activation_sizes(image_side, image_side)
            .map(|s| s.kept)
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use crate::reference::ReferenceBackend;

    fn net(config: ResNetConfig) -> ResNet {
        ResNet::new(config, &mut TensorLayout::new(), &mut TensorLayout::new()).unwrap()
    }

    #[test]
    fn activation_sizes_of_the_tiny_network_by_hand() {
        // 8x8 input, CIFAR stem of 8 channels, one basic block per stage (8, 16, 32 channels),
        // stride 2 in the second and third: maps of 8x8, 8x8, 4x4, 2x2.
        let sizes = net(ResNetConfig::tiny()).activation_sizes(8, 8).unwrap();
        let stem = 2 * (8 * 8 * 8); // conv output, ReLU output
        let layer1 = 4 * (8 * 8 * 8); // conv1, ReLU between, conv2, block output
        let layer2 = 5 * (16 * 4 * 4); // the same plus the downsample's conv output
        let layer3 = 5 * (32 * 2 * 2);
        let pooled = 32;
        assert_eq!(sizes.kept, stem + layer1 + layer2 + layer3 + pooled);
        assert_eq!(sizes.kept, 5024);
        assert_eq!(sizes.largest, 8 * 8 * 8);
        // layer1's 3x3 convolutions: 8 x 3 x 3 by 8 x 8 (the stem's is 3 x 9 by 64, layer2's
        // second 16 x 9 by 16).
        assert_eq!(sizes.largest_columns, 8 * 9 * 64);
        assert_eq!(net(ResNetConfig::tiny()).activation_len(8), Some(5024));
    }

    /// The count is what `plan` allocates (every record buffer, statistics aside), and
    /// `largest` is what `needs` asks of the scratch, for both stems and both block kinds.
    #[test]
    fn activation_sizes_match_the_planned_record() {
        let backend = ReferenceBackend::<f32>::new();
        let configs = [
            (ResNetConfig::resnet18(), 40, 36),
            (ResNetConfig::resnet50(), 33, 33),
            (ResNetConfig::resnet32(), 12, 10),
        ];
        for (config, height, width) in configs {
            let resnet = net(config);
            let batch = 3;
            let record = resnet.plan(&backend, batch, height, width).unwrap();
            let stem = &record.stem;
            let mut planned = stem.conv_bn.conv_out.len() + stem.act.len();
            if let Some((_, y, arg)) = &stem.pool {
                planned += y.len() + arg.len();
            }
            for b in &record.blocks {
                planned += b.units.iter().map(|u| u.conv_out.len()).sum::<usize>();
                planned += b.inner.iter().map(|x| x.len()).sum::<usize>();
                planned += b.downsample.as_ref().map_or(0, |d| d.conv_out.len());
                planned += b.out.len();
            }
            planned += record.pooled.len();
            let sizes = resnet.activation_sizes(height, width).unwrap();
            assert_eq!(batch * sizes.kept, planned, "{config:?}");
            assert_eq!(
                batch * sizes.largest,
                resnet.needs(&backend, &record).activation,
                "{config:?}"
            );
        }
    }

    #[test]
    fn activation_sizes_refuse_what_plan_refuses_or_cannot_count() {
        let resnet = net(ResNetConfig::resnet50());
        assert_eq!(resnet.activation_sizes(0, 8), None);
        assert_eq!(resnet.activation_len(usize::MAX / 2), None);
        assert!(resnet.activation_len(224).is_some());
    }
}
