//! NCCL: the collective of a data-parallel run's CUDA ranks (feature `nccl`).
//!
//! What it computes is [`Collective`]'s contract: sums, gathers and broadcasts across the
//! ranks, each rank on its own GPU. Every operation is enqueued on the backend's stream, after
//! the kernels before it and before the ones after it, so nothing waits for the device except
//! the host sums and the barrier, which must hand back host values. The gradient all-reduce is
//! one NCCL group over every gradient tensor (NCCL fuses the group's operations); it runs after
//! backward, not in buckets during it, since no device has yet measured what overlap would
//! gain here. NCCL's ring sums in a fixed order for a given world size and topology, so every
//! rank receives the same bits.
//!
//! NCCL is loaded at run time like the other CUDA libraries. cudarc looks for it under the
//! development name `libnccl.so` (NCCL's runtime package installs only `libnccl.so.2`), so
//! [`NcclId::create`] says which file it needs instead of panicking inside the loader.
//!
//! Joining: rank 0 creates an [`NcclId`] and sends its bytes to every other rank over the job's
//! launcher channel (MPI in the runtime); every rank then calls [`NcclCollective::join`] with
//! them and its placement.

use std::cell::RefCell;

use cudarc::driver::CudaSlice;
use cudarc::nccl::result::NcclError;
use cudarc::nccl::safe::{group_end, group_start, Comm, Id, NcclType, ReduceOp};
use cudarc::nccl::sys;
use dscl_core::collective::{check_gather, Collective, Placement};
use dscl_core::{BufferLen, Error, Result};

use crate::backend::{driver, CudaBackend, CudaBuffer};
use crate::device::InitError;

/// The file cudarc loads NCCL from.
pub const NCCL_LIBRARY: &str = "libnccl.so";

/// Whether NCCL can be loaded on this machine: `Ok`, or an error that names the library and
/// how to install it.
pub fn find_nccl() -> std::result::Result<(), InitError> {
    // SAFETY: only tries to open the library (`dlopen`) under each of its candidate names;
    // nothing is called in it.
    if unsafe { sys::is_culib_present() } {
        return Ok(());
    }
    Err(InitError(format!(
        "NCCL was not found: the CUDA ranks of a --distributed run exchange through NCCL, \
         loaded at run time as {NCCL_LIBRARY} (the development package's name: install NCCL, \
         NCCL 2.18 or later, or link {NCCL_LIBRARY} to its libnccl.so.2 in a directory on \
         LD_LIBRARY_PATH)"
    )))
}

/// The bytes that name one NCCL communicator: created by rank 0, sent to every rank.
#[derive(Clone, Copy)]
pub struct NcclId(pub [u8; 128]);

impl NcclId {
    /// A new communicator's name (rank 0 only); an error naming the library when NCCL is
    /// missing.
    pub fn create() -> std::result::Result<Self, InitError> {
        find_nccl()?;
        let id = Id::new().map_err(|e| InitError(format!("ncclGetUniqueId failed: {e:?}")))?;
        Ok(NcclId(id.internal().map(|byte| byte as u8)))
    }
}

/// One rank's NCCL communicator, on its backend's stream.
pub struct NcclCollective {
    comm: Comm,
    placement: Placement,
    /// Device room for the host sums and the barrier's token: grow-only.
    host_sums: RefCell<CudaSlice<f64>>,
}

/// An NCCL failure as the library's error.
fn nccl(what: &'static str, e: NcclError) -> Error {
    Error::Device {
        what,
        code: e.0 as i64,
    }
}

impl NcclCollective {
    /// Joins the communicator `id` as `placement.rank` of `placement.world`, on `backend`'s
    /// GPU and stream; returns when every rank has joined.
    pub fn join(
        backend: &CudaBackend,
        id: NcclId,
        placement: Placement,
    ) -> std::result::Result<Self, InitError> {
        placement
            .check()
            .map_err(|e| InitError(format!("NCCL placement: {e}")))?;
        find_nccl()?;
        let id = Id::uninit(id.0.map(|byte| byte as core::ffi::c_char));
        let comm = Comm::from_rank(backend.stream.clone(), placement.rank, placement.world, id)
            .map_err(|e| {
                InitError(format!(
                    "rank {} of {} could not join the NCCL communicator: {e:?}",
                    placement.rank, placement.world
                ))
            })?;
        let host_sums = backend
            .stream
            .alloc_zeros::<f64>(1)
            .map_err(|e| InitError(format!("allocating NCCL's host-sum buffer: {e}")))?;
        Ok(NcclCollective {
            comm,
            placement,
            host_sums: RefCell::new(host_sums),
        })
    }

    /// Every rank's `local[..len]` into `gathered`, rank by rank.
    fn gather<T: NcclType>(
        &self,
        local: &CudaBuffer<T>,
        len: usize,
        gathered: &mut CudaBuffer<T>,
        what: &'static str,
    ) -> Result<()> {
        check_gather(self.placement, local.len, len, gathered.len)?;
        let out = self.placement.world * len;
        self.comm
            .all_gather(
                &local.slice.slice(..len),
                &mut gathered.slice.slice_mut(..out),
            )
            .map_err(|e| nccl(what, e))?;
        Ok(())
    }

    /// Runs `enqueue` between `ncclGroupStart` and `ncclGroupEnd`, ending the group whatever
    /// `enqueue` returned.
    fn grouped(&self, enqueue: impl FnOnce() -> Result<()>) -> Result<()> {
        group_start().map_err(|e| nccl("ncclGroupStart", e))?;
        let enqueued = enqueue();
        let ended = group_end().map_err(|e| nccl("ncclGroupEnd", e));
        enqueued.and(ended.map(|_| ()))
    }
}

impl Collective<CudaBackend> for NcclCollective {
    fn placement(&self) -> Placement {
        self.placement
    }

    fn all_reduce_sum(
        &self,
        _backend: &CudaBackend,
        buffers: &mut [CudaBuffer<f32>],
    ) -> Result<()> {
        self.grouped(|| {
            for buffer in buffers.iter_mut() {
                let len = buffer.len;
                self.comm
                    .all_reduce_in_place(&mut buffer.slice.slice_mut(..len), &ReduceOp::Sum)
                    .map_err(|e| nccl("ncclAllReduce", e))?;
            }
            Ok(())
        })
    }

    /// Through the device: uploaded to the communicator's stream, summed, read back.
    fn all_reduce_sum_host(&self, values: &mut [f64]) -> Result<()> {
        let stream = self.comm.stream();
        let mut room = self.host_sums.borrow_mut();
        if room.len() < values.len().max(1) {
            *room = stream
                .alloc_zeros::<f64>(values.len().max(1))
                .map_err(|e| driver("NCCL host-sum buffer", e))?;
        }
        let mut view = room.slice_mut(..values.len().max(1));
        if !values.is_empty() {
            stream
                .memcpy_htod(values, &mut view.slice_mut(..values.len()))
                .map_err(|e| driver("NCCL host-sum upload", e))?;
        }
        self.comm
            .all_reduce_in_place(&mut view, &ReduceOp::Sum)
            .map_err(|e| nccl("ncclAllReduce (host values)", e))?;
        if !values.is_empty() {
            stream
                .memcpy_dtoh(&view.slice(..values.len()), values)
                .map_err(|e| driver("NCCL host-sum download", e))?;
        }
        stream
            .synchronize()
            .map_err(|e| driver("NCCL host-sum synchronize", e))
    }

    fn all_gather(
        &self,
        _backend: &CudaBackend,
        local: &CudaBuffer<f32>,
        len: usize,
        gathered: &mut CudaBuffer<f32>,
    ) -> Result<()> {
        self.gather(local, len, gathered, "ncclAllGather")
    }

    fn all_gather_index(
        &self,
        _backend: &CudaBackend,
        local: &CudaBuffer<u32>,
        len: usize,
        gathered: &mut CudaBuffer<u32>,
    ) -> Result<()> {
        self.gather(local, len, gathered, "ncclAllGather (labels)")
    }

    fn broadcast(
        &self,
        _backend: &CudaBackend,
        buffers: &mut [CudaBuffer<f32>],
        root: usize,
    ) -> Result<()> {
        dscl_core::error::ensure(
            root < self.placement.world,
            "broadcast root",
            "must be a rank of the run",
        )?;
        self.grouped(|| {
            for buffer in buffers.iter_mut() {
                let len = buffer.len;
                self.comm
                    .broadcast_in_place(&mut buffer.slice.slice_mut(..len), root as i32)
                    .map_err(|e| nccl("ncclBroadcast", e))?;
            }
            Ok(())
        })
    }

    fn barrier(&self) -> Result<()> {
        // A one-element sum every rank must join, waited for.
        self.all_reduce_sum_host(&mut [])
    }
}
