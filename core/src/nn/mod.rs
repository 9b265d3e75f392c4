//! The layer graph: each layer's `forward` and `backward` side by side, over the
//! [`Backend`](crate::Backend) trait, in the style of llm.c.
//!
//! Three kinds of storage are kept apart:
//! - **tensors** ([`TensorSet`], laid out by a [`TensorLayout`]): parameters, their gradients,
//!   the optimizer's velocity, batch-norm running statistics;
//! - **records** (`*Record`): what one forward pass keeps for its backward, planned once for
//!   its input size — a step runs the same parameters over several records (the query images
//!   and the small crops) and backward accumulates into one gradient set;
//! - **scratch** ([`Scratch`]): temporaries every pass borrows and returns.
//!
//! Nothing here allocates after planning, and nothing needs a global allocator: layouts and
//! records use fixed-capacity `heapless` storage, buffers come from the backend.

// Layers pass every buffer explicitly, as the kernels they call do (llm.c style), rather than
// hiding them in context structs.
#![allow(clippy::too_many_arguments)]

pub mod activation;
pub mod batch_norm;
pub mod block;
pub mod classifier;
pub mod conv;
pub mod conv_bn;
pub mod encoder;
pub mod head;
pub mod linear;
pub mod pool;
pub mod resnet;
pub mod roi_align;
pub mod scratch;
pub mod tail;
pub mod tensors;

pub use crate::loss::L2Normalize;
pub use batch_norm::{BatchNorm2d, BatchNormSaved, BnMode};
pub use block::{BlockKind, ResidualBlock};
pub use classifier::{LinearClassifier, ResNetClassifier};
pub use conv::Conv2d;
pub use conv_bn::{ConvBn, ScratchNeeds};
pub use encoder::{Encoder, EncoderRecord};
pub use head::{EmbeddingRecord, HeadRecord, ProjectionHead, DEFAULT_EMBEDDING_DIM};
pub use linear::Linear;
pub use pool::{GlobalAvgPool, MaxPool2d};
pub use resnet::{ResNet, ResNetConfig, ResNetRecord, Stem};
pub use roi_align::RoiAlign;
pub use scratch::Scratch;
pub use tail::{CutEncoder, EncoderTail, TailRecord};
pub use tensors::{Init, TensorId, TensorLayout, TensorSet, TensorSpec};
