//! The device collective a backend brings to a run of several processes: the CUDA ranks of an
//! MPI build exchange through NCCL, on their GPUs and their steps' streams; every other backend
//! exchanges through the cluster's host-staged MPI ([`super::Exchange::Staged`]).
//!
//! The runtime's training code is generic over [`TrainBackend`], so it takes whichever the
//! backend has without knowing which: [`super::Cluster::exchange_on`] joins the device
//! collective when there is one.

use anyhow::Result;
use dscl_core::collective::Collective;
use dscl_core::{Backend, Placement};

use super::Cluster;

/// A backend the runtime trains on, and the device collective it has, if any.
pub trait TrainBackend: Backend<Elem = f32> + Sized {
    /// Joins this backend's device collective for `cluster`'s run, when it has one and the run
    /// has several processes; `None` otherwise (the run exchanges through the cluster).
    fn join_device_collective(
        _cluster: &Cluster,
        _backend: &Self,
    ) -> Result<Option<DeviceCollective>> {
        Ok(None)
    }

    /// `collective` as this backend's, or `None` for a backend that has no device collective
    /// (so never joined one).
    fn device_collective(_collective: &DeviceCollective) -> Option<&dyn Collective<Self>> {
        None
    }
}

impl TrainBackend for dscl_cpu::CpuBackend<'_> {}

#[cfg(feature = "wgpu")]
impl TrainBackend for dscl_wgpu::WgpuBackend {}

/// The device collective of this build: NCCL with CUDA and MPI, none otherwise.
#[cfg(all(feature = "cuda", feature = "mpi"))]
pub type DeviceCollective = dscl_cuda::NcclCollective;

/// The device collective of this build: none without both CUDA and MPI.
#[cfg(not(all(feature = "cuda", feature = "mpi")))]
pub enum DeviceCollective {}

/// Where `collective`'s process stands in its run.
pub fn placement(collective: &DeviceCollective) -> Placement {
    #[cfg(all(feature = "cuda", feature = "mpi"))]
    return Collective::<dscl_cuda::CudaBackend>::placement(collective);
    #[cfg(not(all(feature = "cuda", feature = "mpi")))]
    match *collective {}
}

#[cfg(all(feature = "cuda", not(feature = "mpi")))]
impl TrainBackend for dscl_cuda::CudaBackend {}

/// The CUDA ranks' NCCL communicator: rank 0 names it, MPI carries the name to every rank, and
/// each joins it on its backend's stream.
#[cfg(all(feature = "cuda", feature = "mpi"))]
impl TrainBackend for dscl_cuda::CudaBackend {
    fn join_device_collective(
        cluster: &Cluster,
        backend: &Self,
    ) -> Result<Option<DeviceCollective>> {
        let placement = cluster.placement();
        if placement.world == 1 {
            return Ok(None);
        }
        let mut id = dscl_cuda::NcclId([0; 128]);
        if placement.rank == 0 {
            id = dscl_cuda::NcclId::create()?;
        }
        cluster.broadcast_bytes(&mut id.0)?;
        Ok(Some(dscl_cuda::NcclCollective::join(
            backend, id, placement,
        )?))
    }

    fn device_collective(collective: &DeviceCollective) -> Option<&dyn Collective<Self>> {
        Some(collective)
    }
}
