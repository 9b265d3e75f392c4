//! The collective seam: what the processes of a data-parallel run exchange, beside the
//! [`Backend`] (a backend computes on one device; a collective connects the devices).
//!
//! A run of R processes ("ranks") is the single-process run with R replica groups
//! ([`crate::train::DsclConfig::replicas`]) cut along its groups: rank r holds group r's images
//! and computes group r's passes and losses, and four operations stand where the in-memory
//! groups shared buffers:
//!
//! - **all-reduce (sum)** of the gradient buffers after backward (DDP's average, the 1 / R
//!   already applied by each group's loss), and of host scalars (the reported losses);
//! - **all-gather** of each rank's key rows and labels (the queue takes every group's keys in
//!   group order: the official `concat_all_gather`);
//! - **broadcast** from rank 0 (initial weights, resumed state, and the batch-norm running
//!   statistics, which only group 0 moves: DDP's `broadcast_buffers`);
//! - **barrier**.
//!
//! Every rank must call the same operations in the same order with the same lengths; a rank
//! that fails must end the run (an implementation over MPI aborts the job), since the others
//! would wait for it. [`Solo`] is the one-process collective: every operation is the identity
//! (all-gather copies the local rows), so a step given [`Solo`] is the plain step.

use crate::backend::{Backend, BufferLen};
use crate::error::{check_len, ensure, Result};

/// Where this process stands in its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// This process's rank, `0..world`.
    pub rank: usize,
    /// Processes in the run.
    pub world: usize,
}

impl Placement {
    /// One process alone.
    pub const SOLO: Placement = Placement { rank: 0, world: 1 };

    pub fn check(&self) -> Result<()> {
        ensure(self.world >= 1, "world size", "must be at least 1")?;
        ensure(
            self.rank < self.world,
            "rank",
            "must be below the world size",
        )
    }
}

/// The operations the ranks of a run perform together, over the buffers of backend `B`.
pub trait Collective<B: Backend> {
    fn placement(&self) -> Placement;

    /// Replaces each of `buffers` (its whole length) by the element-wise sum of that buffer
    /// over every rank. The summation order across ranks is the implementation's.
    fn all_reduce_sum(&self, backend: &B, buffers: &mut [B::Buffer]) -> Result<()>;

    /// Replaces each of `values` by its sum over every rank.
    fn all_reduce_sum_host(&self, values: &mut [f64]) -> Result<()>;

    /// Writes every rank's `local[..len]` into `gathered[r * len..(r + 1) * len]`, rank by rank.
    fn all_gather(
        &self,
        backend: &B,
        local: &B::Buffer,
        len: usize,
        gathered: &mut B::Buffer,
    ) -> Result<()>;

    /// [`Collective::all_gather`] for index buffers (labels).
    fn all_gather_index(
        &self,
        backend: &B,
        local: &B::IndexBuffer,
        len: usize,
        gathered: &mut B::IndexBuffer,
    ) -> Result<()>;

    /// Replaces each of `buffers` on every rank by rank `root`'s.
    fn broadcast(&self, backend: &B, buffers: &mut [B::Buffer], root: usize) -> Result<()>;

    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
}

/// Checks an all-gather's lengths: `local` holds at least `len`, `gathered` at least
/// `world * len`.
pub fn check_gather(
    placement: Placement,
    local_len: usize,
    len: usize,
    gathered_len: usize,
) -> Result<()> {
    check_len("all-gather input", local_len, len)?;
    check_len(
        "all-gather output",
        gathered_len,
        placement.world.saturating_mul(len),
    )
}

/// The one-process run: reductions and broadcasts leave their buffers as they are, and an
/// all-gather copies the local rows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl<B: Backend> Collective<B> for Solo {
    fn placement(&self) -> Placement {
        Placement::SOLO
    }

    fn all_reduce_sum(&self, _backend: &B, _buffers: &mut [B::Buffer]) -> Result<()> {
        Ok(())
    }

    fn all_reduce_sum_host(&self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }

    fn all_gather(
        &self,
        backend: &B,
        local: &B::Buffer,
        len: usize,
        gathered: &mut B::Buffer,
    ) -> Result<()> {
        check_gather(Placement::SOLO, local.len(), len, gathered.len())?;
        backend.copy(local, 0, gathered, 0, len)
    }

    fn all_gather_index(
        &self,
        backend: &B,
        local: &B::IndexBuffer,
        len: usize,
        gathered: &mut B::IndexBuffer,
    ) -> Result<()> {
        check_gather(Placement::SOLO, local.len(), len, gathered.len())?;
        backend.copy_index(local, 0, gathered, 0, len)
    }

    fn broadcast(&self, _backend: &B, _buffers: &mut [B::Buffer], root: usize) -> Result<()> {
        ensure(root == 0, "broadcast root", "must be a rank of the run")
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(feature = "alloc")]
mod staged;
#[cfg(feature = "alloc")]
pub use staged::{HostCollective, Reducible, Staged};
