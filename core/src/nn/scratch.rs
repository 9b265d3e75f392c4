//! The buffers one forward or backward pass borrows and returns: three activation-sized
//! temporaries, two gradient buffers that alternate between blocks, and the convolution
//! workspace. One `Scratch` serves every pass of a step (query, crops, keys), sized for the
//! largest, so activations that are not needed by backward are never kept.

use crate::backend::Backend;
use crate::error::Result;
use crate::nn::conv_bn::ScratchNeeds;

pub struct Scratch<B: Backend> {
    pub tmp: [B::Buffer; 3],
    pub grad: [B::Buffer; 2],
    pub conv_workspace: B::Buffer,
    needs: ScratchNeeds,
}

impl<B: Backend> Scratch<B> {
    pub fn new(backend: &B, needs: ScratchNeeds) -> Result<Self> {
        let a = needs.activation.max(1);
        Ok(Scratch {
            tmp: [backend.alloc(a)?, backend.alloc(a)?, backend.alloc(a)?],
            grad: [backend.alloc(a)?, backend.alloc(a)?],
            conv_workspace: backend.alloc(needs.conv_workspace.max(1))?,
            needs,
        })
    }

    /// What this scratch was sized for.
    pub fn needs(&self) -> ScratchNeeds {
        self.needs
    }
}
