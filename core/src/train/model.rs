//! Everything a stage-1 run learns or carries from step to step: the query encoder's
//! parameters (with gradients and velocity), the momentum (key) encoder, both encoders'
//! batch-norm statistics, and the key queue.

use rand_core::Rng;

use crate::backend::Backend;
use crate::error::Result;
use crate::nn::encoder::Encoder;
use crate::nn::tensors::TensorSet;
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
        let query = Trainable::initialised(backend, &encoder.params, rng)?;
        let mut key_params = TensorSet::zeros(backend, &encoder.params)?;
        key_params.copy_from(backend, &query.params)?;
        let query_state = TensorSet::initialised(backend, &encoder.state, rng)?;
        let key_state = TensorSet::initialised(backend, &encoder.state, rng)?;
        Ok(DsclModel {
            query,
            query_state,
            key_params,
            key_state,
            queue: KeyQueue::new(backend, queue_len, encoder.embedding_dim())?,
        })
    }
}
