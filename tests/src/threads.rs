//! A [`HostCollective`] between threads of one process: the ranks of a data-parallel run
//! without MPI, for tests that compare R ranks with one process holding R replica groups.
//!
//! Each operation deposits this rank's values, waits for every rank, reads all of them, and
//! waits again before the slots are reused. A reduction adds the ranks' values in rank order
//! on every rank, so every rank gets the same bits.

use std::any::Any;
use std::sync::{Arc, Barrier, Mutex};

use dscl_core::collective::{Collective, HostCollective};
use dscl_core::{Backend, Error, Placement, Result};

struct Shared {
    barrier: Barrier,
    slots: Mutex<Vec<Option<Box<dyn Any + Send>>>>,
}

/// One rank's end of a group of threads.
pub struct Threads {
    placement: Placement,
    shared: Arc<Shared>,
}

impl Threads {
    /// The `world` ranks of one group, rank r at index r: move each into its own thread.
    pub fn group(world: usize) -> Vec<Threads> {
        let shared = Arc::new(Shared {
            barrier: Barrier::new(world),
            slots: Mutex::new((0..world).map(|_| None).collect()),
        });
        (0..world)
            .map(|rank| Threads {
                placement: Placement { rank, world },
                shared: Arc::clone(&shared),
            })
            .collect()
    }

    /// Every rank's `mine`, rank by rank. Every rank passes both barriers whatever happens,
    /// so a failed exchange is an error on every rank, never a rank left waiting: a poisoned
    /// lock, or ranks that called different operations (a slot of another type).
    fn exchange<T: Clone + Send + 'static>(&self, mine: &[T]) -> Result<Vec<Vec<T>>> {
        let rank = self.placement.rank;
        let deposited = match self.shared.slots.lock() {
            Ok(mut slots) => {
                slots[rank] = Some(Box::new(mine.to_vec()));
                true
            }
            Err(_) => false,
        };
        self.shared.barrier.wait();
        let all = match self.shared.slots.lock() {
            Ok(slots) => slots
                .iter()
                .map(|slot| slot.as_ref()?.downcast_ref::<Vec<T>>().cloned())
                .collect::<Option<Vec<_>>>(),
            Err(_) => None,
        };
        self.shared.barrier.wait();
        all.filter(|_| deposited).ok_or(Error::InvalidArgument {
            what: "thread collective",
            reason: "the ranks did not all make the same exchange",
        })
    }

    fn sum<T: Copy + Send + std::ops::Add<Output = T> + 'static>(
        &self,
        local: &[T],
        sum: &mut [T],
    ) -> Result<()> {
        let parts = self.exchange(local)?;
        for (i, v) in sum.iter_mut().enumerate() {
            *v = parts[1..].iter().fold(parts[0][i], |acc, p| acc + p[i]);
        }
        Ok(())
    }

    fn gather<T: Copy + Send + 'static>(&self, local: &[T], gathered: &mut [T]) -> Result<()> {
        let parts = self.exchange(local)?;
        for (r, part) in parts.iter().enumerate() {
            gathered[r * local.len()..(r + 1) * local.len()].copy_from_slice(part);
        }
        Ok(())
    }

    fn bcast<T: Copy + Send + 'static>(&self, values: &mut [T], root: usize) -> Result<()> {
        let parts = self.exchange(values)?;
        values.copy_from_slice(&parts[root]);
        Ok(())
    }
}

impl HostCollective for Threads {
    fn placement(&self) -> Placement {
        self.placement
    }
    fn all_reduce_sum_f32(&self, local: &[f32], sum: &mut [f32]) -> Result<()> {
        self.sum(local, sum)
    }
    fn all_reduce_sum_f64(&self, local: &[f64], sum: &mut [f64]) -> Result<()> {
        self.sum(local, sum)
    }
    fn all_gather_f32(&self, local: &[f32], gathered: &mut [f32]) -> Result<()> {
        self.gather(local, gathered)
    }
    fn all_gather_f64(&self, local: &[f64], gathered: &mut [f64]) -> Result<()> {
        self.gather(local, gathered)
    }
    fn all_gather_u32(&self, local: &[u32], gathered: &mut [u32]) -> Result<()> {
        self.gather(local, gathered)
    }
    fn broadcast_f32(&self, values: &mut [f32], root: usize) -> Result<()> {
        self.bcast(values, root)
    }
    fn broadcast_f64(&self, values: &mut [f64], root: usize) -> Result<()> {
        self.bcast(values, root)
    }
    fn barrier(&self) -> Result<()> {
        self.shared.barrier.wait();
        Ok(())
    }
}

/// A collective that leaves one of its operations out: the planted bug of the tests that show
/// each exchange of a data-parallel step is needed.
pub struct Without<C> {
    pub inner: C,
    pub skipped: Skipped,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Skipped {
    GradientSum,
    StateBroadcast,
}

impl<B: Backend, C: Collective<B>> Collective<B> for Without<C> {
    fn placement(&self) -> dscl_core::Placement {
        self.inner.placement()
    }
    fn all_reduce_sum(&self, backend: &B, buffers: &mut [B::Buffer]) -> dscl_core::Result<()> {
        match self.skipped {
            Skipped::GradientSum => Ok(()),
            Skipped::StateBroadcast => self.inner.all_reduce_sum(backend, buffers),
        }
    }
    fn all_reduce_sum_host(&self, values: &mut [f64]) -> dscl_core::Result<()> {
        self.inner.all_reduce_sum_host(values)
    }
    fn all_gather(
        &self,
        backend: &B,
        local: &B::Buffer,
        len: usize,
        gathered: &mut B::Buffer,
    ) -> dscl_core::Result<()> {
        self.inner.all_gather(backend, local, len, gathered)
    }
    fn all_gather_index(
        &self,
        backend: &B,
        local: &B::IndexBuffer,
        len: usize,
        gathered: &mut B::IndexBuffer,
    ) -> dscl_core::Result<()> {
        self.inner.all_gather_index(backend, local, len, gathered)
    }
    fn broadcast(
        &self,
        backend: &B,
        buffers: &mut [B::Buffer],
        root: usize,
    ) -> dscl_core::Result<()> {
        match self.skipped {
            Skipped::StateBroadcast => self.inner.barrier(),
            Skipped::GradientSum => self.inner.broadcast(backend, buffers, root),
        }
    }
    fn barrier(&self) -> dscl_core::Result<()> {
        self.inner.barrier()
    }
}
