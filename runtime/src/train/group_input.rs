//! A classifier step's share of each batch (stage 2 and the cross-entropy baseline): this
//! process's replica group of `local` images, all of them for one process, and what its loader
//! must decode for it.

use std::sync::Arc;

use anyhow::Result;
use dscl_core::backend::prelude::*;
use dscl_core::Placement;

use super::epochs::SlotsNeeded;
use crate::data::Batch;

/// This process's images and labels of each batch, on the host and on the device.
pub(super) struct GroupInput<B: Backend> {
    placement: Placement,
    local: usize,
    images: Vec<f32>,
    pub images_buf: B::Buffer,
    pub labels_buf: B::IndexBuffer,
}

impl<B: Backend<Elem = f32>> GroupInput<B> {
    /// Room for `local` images of `3 x size x size` at `placement`.
    pub fn new(backend: &B, placement: Placement, local: usize, size: usize) -> Result<Self> {
        let images = vec![0.0f32; local * 3 * size * size];
        Ok(GroupInput {
            placement,
            local,
            images_buf: backend.alloc(images.len())?,
            labels_buf: backend.alloc_index(local)?,
            images,
        })
    }

    fn first(&self) -> usize {
        self.placement.rank * self.local
    }

    /// The slots of every batch this process uses: its group's when the run has several
    /// processes (one process uses every slot).
    pub fn needs(&self) -> Option<SlotsNeeded> {
        let slots = self.first()..self.first() + self.local;
        (self.placement.world > 1)
            .then(|| -> SlotsNeeded { Arc::new(move |_, slot| slots.contains(&slot)) })
    }

    /// Copies this process's images and labels of `batch` into the host array and uploads both.
    pub fn upload(&mut self, backend: &B, batch: &Batch<Option<Vec<f32>>>) -> Result<()> {
        let first = self.first();
        let len = self.images.len() / self.local.max(1);
        for (i, row) in self.images.chunks_exact_mut(len).enumerate() {
            row.copy_from_slice(batch.loaded(first + i)?);
        }
        backend.upload(&mut self.images_buf, 0, &self.images)?;
        let labels = batch.labels.get(first..first + self.local).ok_or_else(|| {
            anyhow::anyhow!(
                "a batch of {} images has no slots {first}..{}",
                batch.labels.len(),
                first + self.local
            )
        })?;
        backend.upload_index(&mut self.labels_buf, 0, labels)?;
        Ok(())
    }
}
