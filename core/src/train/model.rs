//! Everything a stage-1 run learns or carries from step to step: the query encoder's
//! parameters (with gradients and velocity), the momentum (key) encoder, both encoders'
//! batch-norm statistics, and the key queue.

use rand_core::Rng;

use crate::backend::Backend;
use crate::error::Result;
use crate::nn::encoder::Encoder;
use crate::nn::tensors::{TensorLayout, TensorSet};
use crate::train::optim::Trainable;
use crate::train::queue::KeyQueue;

pub struct DsclModel<B: Backend> {
    pub query: Trainable<B>,
    pub query_state: TensorSet<B>,
    pub key_params: TensorSet<B>,
    pub key_state: TensorSet<B>,
    pub queue: KeyQueue<B>,
}

impl<B: Backend> DsclModel<B> {
    /// Initialises the query encoder from `rng` (torchvision's scheme), copies it into the key
    /// encoder (as MoCo does) and makes an empty queue of `queue_len` keys.
    pub fn new(
        backend: &B,
        encoder: &Encoder,
        queue_len: usize,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let mut model = Self::empty(backend, queue_len, encoder.embedding_dim())?;
        model.init(backend, &encoder.params, &encoder.state, rng)?;
        Ok(model)
    }

    /// An empty queue of `queue_len` keys of `embedding_dim` and no tensors yet: [`Self::init`]
    /// makes them in place.
    ///
    /// In two phases for a microcontroller: each tensor set keeps fixed-capacity room for its
    /// tensors (about 1.5 KB on a 32-bit target) and each layout for its specs (about 17 KB).
    /// Filled in place, a model is never moved, so its caller's stack never holds a second
    /// copy of it beside the layouts. Left to inline, so that it is built straight into its
    /// caller's value: in a frame of its own it came back through a temporary, and the
    /// firmware's planning stack peaked at 81,004 bytes instead of 71,644.
    pub fn empty(backend: &B, queue_len: usize, embedding_dim: usize) -> Result<Self> {
        let none = TensorLayout::new();
        Ok(DsclModel {
            query: Trainable::zeros(backend, &none)?,
            query_state: TensorSet::zeros(backend, &none)?,
            key_params: TensorSet::zeros(backend, &none)?,
            key_state: TensorSet::zeros(backend, &none)?,
            queue: KeyQueue::new(backend, queue_len, embedding_dim)?,
        })
    }

    /// The query encoder's tensors of `params` and `state` initialised from `rng`
    /// (torchvision's scheme; parameters, then the query's statistics, then the key's), and
    /// the parameters copied into the key encoder, as MoCo starts.
    #[inline(never)]
    pub fn init(
        &mut self,
        backend: &B,
        params: &TensorLayout,
        state: &TensorLayout,
        rng: &mut impl Rng,
    ) -> Result<()> {
        replace(&mut self.query, || {
            Trainable::initialised(backend, params, rng)
        })?;
        replace(&mut self.query_state, || {
            TensorSet::initialised(backend, state, rng)
        })?;
        replace(&mut self.key_params, || TensorSet::zeros(backend, params))?;
        self.key_params.copy_from(backend, &self.query.params)?;
        replace(&mut self.key_state, || {
            TensorSet::initialised(backend, state, rng)
        })
    }
}

/// `*slot = make()?` in a frame of its own, so that the new value's temporary is not kept on
/// the stack beside the caller's (the compiler does not overlap those temporaries).
#[inline(never)]
pub(crate) fn replace<T>(slot: &mut T, make: impl FnOnce() -> Result<T>) -> Result<()> {
    *slot = make()?;
    Ok(())
}
