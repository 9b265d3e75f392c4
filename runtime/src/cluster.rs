//! Runs of several processes (`--distributed`): R processes, started by an MPI launcher
//! (`mpirun -np R`, `srun`), train the run that one process trains with `--replicas R`, each
//! holding one replica group of every batch (see `core::collective`). Rank 0 alone writes the
//! run's files; every rank reads the same data and, with `--resume`, the same checkpoint.
//!
//! The transport is MPI (the `mpi` cargo feature, over the system's Open MPI or MPICH), with
//! the buffers staged through host memory ([`Staged`]), so it serves every backend; CUDA ranks
//! exchange through NCCL on their GPUs instead ([`device`]). A rank that fails ends the whole
//! job ([`Cluster::abort`], MPI_Abort), so no rank waits for it forever.

mod device;

use std::marker::PhantomData;

use anyhow::{bail, Result};
use dscl_core::collective::Collective;
#[cfg(feature = "mpi")]
use dscl_core::collective::Staged;
use dscl_core::nn::TensorSet;
use dscl_core::{Backend, BufferLen, Placement, Solo};

pub use device::{DeviceCollective, TrainBackend};

/// The variables a launcher sets in each process it starts (Open MPI, PMI-1/2 as MPICH and
/// Slurm set them, PMIx); one of them says this process is a rank of a job.
const LAUNCHER_VARIABLES: [&str; 4] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "PMIX_RANK",
    "SLURM_PROCID",
];

/// The launcher variable this process was started with, if any.
pub fn launcher_variable() -> Option<&'static str> {
    LAUNCHER_VARIABLES
        .iter()
        .copied()
        .find(|v| std::env::var_os(v).is_some())
}

/// The variables that give a process's rank among those of its job on its own node.
const LOCAL_RANK_VARIABLES: [&str; 4] = [
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MPI_LOCALRANKID",
    "SLURM_LOCALID",
    "PMI_LOCAL_RANK",
];

/// This process's rank on its node, as its launcher says (none outside a launcher).
pub fn local_rank() -> Option<usize> {
    LOCAL_RANK_VARIABLES
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// This process's part in its run.
pub enum Cluster {
    /// One process: every replica group here.
    Solo,
    #[cfg(feature = "mpi")]
    Mpi(mpi_world::MpiWorld),
}

impl Cluster {
    /// One process, or with `distributed`, this rank of the job its launcher started (an
    /// error says what is missing: the build's MPI, or the launcher).
    pub fn join(distributed: bool) -> Result<Cluster> {
        if !distributed {
            return Ok(Cluster::Solo);
        }
        #[cfg(not(feature = "mpi"))]
        bail!(
            "--distributed needs a build with MPI: cargo build --release -p dscl-runtime \
             --features mpi (with Open MPI or MPICH installed)"
        );
        #[cfg(feature = "mpi")]
        {
            if launcher_variable().is_none() {
                bail!(
                    "--distributed needs an MPI launcher: start every rank with `mpirun -np N \
                     runtime ... --distributed` (or `srun`); this process has none of {}",
                    LAUNCHER_VARIABLES.join(", ")
                );
            }
            Ok(Cluster::Mpi(mpi_world::MpiWorld::init()?))
        }
    }

    pub fn placement(&self) -> Placement {
        match self {
            Cluster::Solo => Placement::SOLO,
            #[cfg(feature = "mpi")]
            Cluster::Mpi(world) => dscl_core::collective::HostCollective::placement(&world),
        }
    }

    /// Whether this process writes the run's files (rank 0).
    pub fn writes(&self) -> bool {
        self.placement().rank == 0
    }

    /// The collective a step exchanges through.
    pub fn exchange(&self) -> Exchange<'_> {
        match self {
            Cluster::Solo => Exchange::Solo(PhantomData),
            #[cfg(feature = "mpi")]
            Cluster::Mpi(world) => Exchange::Staged(Staged::new(world)),
        }
    }

    /// The collective of this run's steps on `backend`: its device collective where it has
    /// one (CUDA's NCCL, joined here by every rank together), else [`Cluster::exchange`].
    pub fn exchange_on<B: TrainBackend>(&self, backend: &B) -> Result<Exchange<'_>> {
        Ok(match B::join_device_collective(self, backend)? {
            Some(device) => Exchange::Device(device),
            None => self.exchange(),
        })
    }

    /// Replaces `bytes` on every rank by rank 0's.
    #[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
    pub fn broadcast_bytes(&self, bytes: &mut [u8]) -> Result<()> {
        match self {
            Cluster::Solo => Ok(()),
            #[cfg(feature = "mpi")]
            Cluster::Mpi(world) => {
                world.broadcast_bytes(bytes);
                Ok(())
            }
        }
    }

    /// Refuses to train unless every rank was started with rank 0's settings (`settings`: this
    /// rank's, as text): a rank with other flags would train another model in lock-step.
    pub fn check_same_settings(&self, settings: &str) -> Result<()> {
        self.check_same(crc32fast::hash(settings.as_bytes()), |rank| {
            format!(
                "rank {rank} was started with other settings than rank 0; every rank of a \
                 --distributed run takes the same flags"
            )
        })
    }

    /// Refuses to go on unless every rank holds rank 0's `model` (its parameters' checksum):
    /// the ranks must stay bit-identical, and a rank that drifted (another reduction order, a
    /// fault) would silently train another model.
    pub fn check_same_model<B: Backend<Elem = f32>>(
        &self,
        backend: &B,
        model: &TensorSet<B>,
        step: u64,
    ) -> Result<()> {
        if self.placement().world == 1 {
            return Ok(());
        }
        let mut hasher = crc32fast::Hasher::new();
        let mut host = Vec::new();
        for buffer in model.buffers() {
            host.resize(buffer.len(), 0.0f32);
            backend.download(buffer, 0, &mut host)?;
            for v in &host {
                hasher.update(&v.to_le_bytes());
            }
        }
        self.check_same(hasher.finalize(), |rank| {
            format!("after step {step}, rank {rank}'s weights differ from rank 0's")
        })
    }

    /// Gathers every rank's `value`; an error (`differs` of the first rank whose value is not
    /// rank 0's) unless they are all the same.
    fn check_same(&self, value: u32, differs: impl Fn(usize) -> String) -> Result<()> {
        let placement = self.placement();
        if placement.world == 1 {
            return Ok(());
        }
        let mut all = vec![0u32; placement.world];
        self.host_gather_u32(&[value], &mut all)?;
        match all.iter().position(|&v| v != all[0]) {
            Some(rank) => bail!("{}", differs(rank)),
            None => Ok(()),
        }
    }

    fn host_gather_u32(&self, local: &[u32], gathered: &mut [u32]) -> Result<()> {
        match self {
            Cluster::Solo => {
                gathered.copy_from_slice(local);
                Ok(())
            }
            #[cfg(feature = "mpi")]
            Cluster::Mpi(world) => Ok(dscl_core::collective::HostCollective::all_gather_u32(
                &world, local, gathered,
            )?),
        }
    }

    /// The signal some rank received (`local`: this rank's), the same on every rank, so all
    /// stop at the same step.
    pub fn agree_on_signal(&self, local: Option<i32>) -> Result<Option<i32>> {
        let world = self.placement().world;
        if world == 1 {
            return Ok(local);
        }
        let mut all = vec![0u32; world];
        let mine = local.map_or(0, |s| s.unsigned_abs());
        self.host_gather_u32(&[mine], &mut all)?;
        Ok(all.iter().find(|&&s| s != 0).map(|&s| s as i32))
    }

    /// Returns once every rank has called it: what rank 0 wrote before (a checkpoint the next
    /// stage reads) is then there for every rank.
    pub fn barrier(&self) -> Result<()> {
        match self {
            Cluster::Solo => Ok(()),
            #[cfg(feature = "mpi")]
            Cluster::Mpi(world) => Ok(dscl_core::collective::HostCollective::barrier(&world)?),
        }
    }

    /// Ends every rank of the job with `code` (a rank that fails must not leave the others
    /// waiting for it); returns for one process.
    #[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
    pub fn abort(&self, code: i32) {
        match self {
            Cluster::Solo => {}
            #[cfg(feature = "mpi")]
            Cluster::Mpi(world) => world.abort(code),
        }
    }
}

/// The collective of a [`Cluster`], for the steps.
pub enum Exchange<'a> {
    Solo(PhantomData<&'a Cluster>),
    #[cfg(feature = "mpi")]
    Staged(Staged<&'a mpi_world::MpiWorld, f32>),
    /// The backend's own (NCCL for CUDA).
    Device(DeviceCollective),
}

/// Forwards each operation to the variant's collective.
macro_rules! forward {
    ($self:expr, |$c:ident| $call:expr) => {
        match $self {
            Exchange::Solo(_) => {
                let $c = &Solo;
                $call
            }
            #[cfg(feature = "mpi")]
            Exchange::Staged($c) => $call,
            Exchange::Device(device) => match B::device_collective(device) {
                Some($c) => $call,
                None => Err(dscl_core::Error::InvalidArgument {
                    what: "device collective",
                    reason: "serves only the backend that joined it",
                }),
            },
        }
    };
}

impl<B: TrainBackend> Collective<B> for Exchange<'_> {
    fn placement(&self) -> Placement {
        match self {
            Exchange::Solo(_) => Placement::SOLO,
            #[cfg(feature = "mpi")]
            Exchange::Staged(c) => Collective::<B>::placement(c),
            Exchange::Device(device) => device::placement(device),
        }
    }
    fn all_reduce_sum(&self, backend: &B, buffers: &mut [B::Buffer]) -> dscl_core::Result<()> {
        forward!(self, |c| c.all_reduce_sum(backend, buffers))
    }
    fn all_reduce_sum_host(&self, values: &mut [f64]) -> dscl_core::Result<()> {
        forward!(self, |c| Collective::<B>::all_reduce_sum_host(c, values))
    }
    fn all_gather(
        &self,
        backend: &B,
        local: &B::Buffer,
        len: usize,
        gathered: &mut B::Buffer,
    ) -> dscl_core::Result<()> {
        forward!(self, |c| c.all_gather(backend, local, len, gathered))
    }
    fn all_gather_index(
        &self,
        backend: &B,
        local: &B::IndexBuffer,
        len: usize,
        gathered: &mut B::IndexBuffer,
    ) -> dscl_core::Result<()> {
        forward!(self, |c| c.all_gather_index(backend, local, len, gathered))
    }
    fn broadcast(
        &self,
        backend: &B,
        buffers: &mut [B::Buffer],
        root: usize,
    ) -> dscl_core::Result<()> {
        forward!(self, |c| c.broadcast(backend, buffers, root))
    }
    fn barrier(&self) -> dscl_core::Result<()> {
        forward!(self, |c| Collective::<B>::barrier(c))
    }
}

#[cfg(feature = "mpi")]
mod mpi_world {
    //! The MPI transport: the job's world communicator.

    use anyhow::{anyhow, Result};
    use dscl_core::collective::HostCollective;
    use dscl_core::Placement;
    use mpi::collective::SystemOperation;
    use mpi::datatype::Equivalence;
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::traits::*;

    pub struct MpiWorld {
        world: SimpleCommunicator,
        // Dropped last: finalises MPI.
        _universe: Universe,
    }

    impl MpiWorld {
        pub fn init() -> Result<MpiWorld> {
            let universe = mpi::initialize().ok_or_else(|| {
                anyhow!("--distributed: MPI is already initialised in this process")
            })?;
            let world = universe.world();
            Ok(MpiWorld {
                world,
                _universe: universe,
            })
        }

        #[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
        pub fn abort(&self, code: i32) {
            self.world.abort(code)
        }

        fn sum<T: Equivalence>(&self, local: &[T], sum: &mut [T]) {
            self.world
                .all_reduce_into(local, sum, SystemOperation::sum());
        }

        fn gather<T: Equivalence>(&self, local: &[T], gathered: &mut [T]) {
            self.world.all_gather_into(local, gathered);
        }

        fn bcast<T: Equivalence>(&self, values: &mut [T], root: usize) {
            self.world
                .process_at_rank(root as i32)
                .broadcast_into(values);
        }

        pub fn broadcast_bytes(&self, bytes: &mut [u8]) {
            self.bcast(bytes, 0)
        }
    }

    // MPI's default error handler ends the job on any error, so these never return one.
    impl HostCollective for &MpiWorld {
        fn placement(&self) -> Placement {
            Placement {
                rank: self.world.rank() as usize,
                world: self.world.size() as usize,
            }
        }
        fn all_reduce_sum_f32(&self, local: &[f32], sum: &mut [f32]) -> dscl_core::Result<()> {
            self.sum(local, sum);
            Ok(())
        }
        fn all_reduce_sum_f64(&self, local: &[f64], sum: &mut [f64]) -> dscl_core::Result<()> {
            self.sum(local, sum);
            Ok(())
        }
        fn all_gather_f32(&self, local: &[f32], gathered: &mut [f32]) -> dscl_core::Result<()> {
            self.gather(local, gathered);
            Ok(())
        }
        fn all_gather_f64(&self, local: &[f64], gathered: &mut [f64]) -> dscl_core::Result<()> {
            self.gather(local, gathered);
            Ok(())
        }
        fn all_gather_u32(&self, local: &[u32], gathered: &mut [u32]) -> dscl_core::Result<()> {
            self.gather(local, gathered);
            Ok(())
        }
        fn broadcast_f32(&self, values: &mut [f32], root: usize) -> dscl_core::Result<()> {
            self.bcast(values, root);
            Ok(())
        }
        fn broadcast_f64(&self, values: &mut [f64], root: usize) -> dscl_core::Result<()> {
            self.bcast(values, root);
            Ok(())
        }
        fn barrier(&self) -> dscl_core::Result<()> {
            self.world.barrier();
            Ok(())
        }
    }
}
