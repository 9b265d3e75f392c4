//! A [`Collective`] over any backend from host-side operations: each operation downloads its
//! buffers into host memory, hands them to a [`HostCollective`] (MPI, or threads in a test),
//! and uploads the result. The gradient all-reduce packs every buffer into one host array
//! first, so a step makes one reduction however many tensors its network has.
//!
//! This is the path for backends without a device-side collective library (the CPU backend,
//! where download and upload are copies, and wgpu); CUDA's NCCL collective reduces on the
//! device instead.

use alloc::vec::Vec;
use core::cell::RefCell;

use super::{check_gather, Collective, Placement};
use crate::backend::{Backend, BufferLen};
use crate::element::Element;
use crate::error::{ensure, Result};

/// The operations over host memory that a transport between processes provides. Every rank
/// calls each with the same lengths; `sum` is as long as `local`, `gathered` is `world` times
/// `local`, rank by rank. A reduction reads one array and writes another, as MPI's does, so
/// no transport copies its input first.
pub trait HostCollective {
    fn placement(&self) -> Placement;
    fn all_reduce_sum_f32(&self, local: &[f32], sum: &mut [f32]) -> Result<()>;
    fn all_reduce_sum_f64(&self, local: &[f64], sum: &mut [f64]) -> Result<()>;
    fn all_gather_f32(&self, local: &[f32], gathered: &mut [f32]) -> Result<()>;
    fn all_gather_f64(&self, local: &[f64], gathered: &mut [f64]) -> Result<()>;
    fn all_gather_u32(&self, local: &[u32], gathered: &mut [u32]) -> Result<()>;
    fn broadcast_f32(&self, values: &mut [f32], root: usize) -> Result<()>;
    fn broadcast_f64(&self, values: &mut [f64], root: usize) -> Result<()>;
    fn barrier(&self) -> Result<()>;
}

/// An element type a [`HostCollective`] moves: picks its operation for the type.
pub trait Reducible: Element {
    fn all_reduce_sum(host: &impl HostCollective, local: &[Self], sum: &mut [Self]) -> Result<()>;
    fn all_gather(host: &impl HostCollective, local: &[Self], gathered: &mut [Self]) -> Result<()>;
    fn broadcast(host: &impl HostCollective, values: &mut [Self], root: usize) -> Result<()>;
}

impl Reducible for f32 {
    fn all_reduce_sum(host: &impl HostCollective, local: &[f32], sum: &mut [f32]) -> Result<()> {
        host.all_reduce_sum_f32(local, sum)
    }
    fn all_gather(host: &impl HostCollective, local: &[f32], gathered: &mut [f32]) -> Result<()> {
        host.all_gather_f32(local, gathered)
    }
    fn broadcast(host: &impl HostCollective, values: &mut [f32], root: usize) -> Result<()> {
        host.broadcast_f32(values, root)
    }
}

impl Reducible for f64 {
    fn all_reduce_sum(host: &impl HostCollective, local: &[f64], sum: &mut [f64]) -> Result<()> {
        host.all_reduce_sum_f64(local, sum)
    }
    fn all_gather(host: &impl HostCollective, local: &[f64], gathered: &mut [f64]) -> Result<()> {
        host.all_gather_f64(local, gathered)
    }
    fn broadcast(host: &impl HostCollective, values: &mut [f64], root: usize) -> Result<()> {
        host.broadcast_f64(values, root)
    }
}

/// [`HostCollective`] `H` as the [`Collective`] of every backend whose elements are `E`. Its
/// host arrays grow to the largest operation and are reused: an operation's input in
/// `values`, its result in `gathered` (a reduction's sums, an all-gather's rows).
pub struct Staged<H, E> {
    host: H,
    values: RefCell<Vec<E>>,
    gathered: RefCell<Vec<E>>,
    indices: RefCell<Vec<u32>>,
    gathered_indices: RefCell<Vec<u32>>,
    /// A host reduction's input (the losses of a step).
    host_values: RefCell<Vec<f64>>,
}

impl<H: HostCollective, E: Reducible> Staged<H, E> {
    pub fn new(host: H) -> Self {
        Staged {
            host,
            values: RefCell::new(Vec::new()),
            gathered: RefCell::new(Vec::new()),
            indices: RefCell::new(Vec::new()),
            gathered_indices: RefCell::new(Vec::new()),
            host_values: RefCell::new(Vec::new()),
        }
    }

    pub fn host(&self) -> &H {
        &self.host
    }

    /// Every one of `buffers` downloaded, one after the other, into the host array `values`
    /// (grown to their total), then `apply(values, result)`, then each uploaded back from
    /// `result`, the array `apply` writes: `values` for an operation in place, `gathered` for
    /// a reduction (MPI reduces from one array into another).
    fn round_trip<B: Backend<Elem = E>>(
        &self,
        backend: &B,
        buffers: &mut [B::Buffer],
        into_gathered: bool,
        apply: impl FnOnce(&mut [E], &mut [E]) -> Result<()>,
    ) -> Result<()> {
        let total = buffers.iter().map(|b| b.len()).sum();
        let (mut values, mut gathered) = (self.values.borrow_mut(), self.gathered.borrow_mut());
        values.resize(total, E::default());
        if into_gathered {
            gathered.resize(total, E::default());
        }
        let mut at = 0;
        for buffer in buffers.iter() {
            let len = buffer.len();
            backend.download(buffer, 0, &mut values[at..at + len])?;
            at += len;
        }
        apply(&mut values[..total], &mut gathered[..])?;
        let result = if into_gathered { &gathered } else { &values };
        at = 0;
        for buffer in buffers.iter_mut() {
            let len = buffer.len();
            backend.upload(buffer, 0, &result[at..at + len])?;
            at += len;
        }
        Ok(())
    }
}

impl<B, H, E> Collective<B> for Staged<H, E>
where
    B: Backend<Elem = E>,
    H: HostCollective,
    E: Reducible,
{
    fn placement(&self) -> Placement {
        self.host.placement()
    }

    fn all_reduce_sum(&self, backend: &B, buffers: &mut [B::Buffer]) -> Result<()> {
        self.round_trip(backend, buffers, true, |values, sums| {
            E::all_reduce_sum(&self.host, values, &mut sums[..values.len()])
        })
    }

    fn all_reduce_sum_host(&self, values: &mut [f64]) -> Result<()> {
        let mut local = self.host_values.borrow_mut();
        local.clear();
        local.extend_from_slice(values);
        self.host.all_reduce_sum_f64(&local, values)
    }

    fn all_gather(
        &self,
        backend: &B,
        local: &B::Buffer,
        len: usize,
        gathered: &mut B::Buffer,
    ) -> Result<()> {
        let placement = self.host.placement();
        check_gather(placement, local.len(), len, gathered.len())?;
        let (mut values, mut all) = (self.values.borrow_mut(), self.gathered.borrow_mut());
        values.resize(len, E::default());
        all.resize(placement.world * len, E::default());
        backend.download(local, 0, &mut values)?;
        E::all_gather(&self.host, &values, &mut all)?;
        backend.upload(gathered, 0, &all)
    }

    fn all_gather_index(
        &self,
        backend: &B,
        local: &B::IndexBuffer,
        len: usize,
        gathered: &mut B::IndexBuffer,
    ) -> Result<()> {
        let placement = self.host.placement();
        check_gather(placement, local.len(), len, gathered.len())?;
        let mut values = self.indices.borrow_mut();
        let mut all = self.gathered_indices.borrow_mut();
        values.resize(len, 0);
        all.resize(placement.world * len, 0);
        backend.download_index(local, 0, &mut values)?;
        self.host.all_gather_u32(&values, &mut all)?;
        backend.upload_index(gathered, 0, &all)
    }

    fn broadcast(&self, backend: &B, buffers: &mut [B::Buffer], root: usize) -> Result<()> {
        ensure(
            root < self.host.placement().world,
            "broadcast root",
            "must be a rank of the run",
        )?;
        self.round_trip(backend, buffers, false, |values, _| {
            E::broadcast(&self.host, values, root)
        })
    }

    fn barrier(&self) -> Result<()> {
        self.host.barrier()
    }
}

/// A transport shared by reference (one communicator serving several collectives).
impl<T: HostCollective> HostCollective for &T {
    fn placement(&self) -> Placement {
        (**self).placement()
    }
    fn all_reduce_sum_f32(&self, local: &[f32], sum: &mut [f32]) -> Result<()> {
        (**self).all_reduce_sum_f32(local, sum)
    }
    fn all_reduce_sum_f64(&self, local: &[f64], sum: &mut [f64]) -> Result<()> {
        (**self).all_reduce_sum_f64(local, sum)
    }
    fn all_gather_f32(&self, local: &[f32], gathered: &mut [f32]) -> Result<()> {
        (**self).all_gather_f32(local, gathered)
    }
    fn all_gather_f64(&self, local: &[f64], gathered: &mut [f64]) -> Result<()> {
        (**self).all_gather_f64(local, gathered)
    }
    fn all_gather_u32(&self, local: &[u32], gathered: &mut [u32]) -> Result<()> {
        (**self).all_gather_u32(local, gathered)
    }
    fn broadcast_f32(&self, values: &mut [f32], root: usize) -> Result<()> {
        (**self).broadcast_f32(values, root)
    }
    fn broadcast_f64(&self, values: &mut [f64], root: usize) -> Result<()> {
        (**self).broadcast_f64(values, root)
    }
    fn barrier(&self) -> Result<()> {
        (**self).barrier()
    }
}
