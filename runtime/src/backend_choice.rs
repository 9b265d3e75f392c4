//! `--backend NAME`: which device runs the work.

use clap::ValueEnum;

/// The backends a user can name on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// Multi-threaded CPU kernels in f32 (dscl-cpu).
    Cpu,
    /// The scalar f64 oracle from dscl-core: slow, exact; what every backend is tested against.
    Reference,
    /// NVIDIA GPUs through CUDA (dscl-cuda).
    Cuda,
    /// Vulkan / Metal / DX12 through wgpu (dscl-wgpu).
    Wgpu,
}

impl BackendChoice {
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Cpu => "cpu",
            BackendChoice::Reference => "reference",
            BackendChoice::Cuda => "cuda",
            BackendChoice::Wgpu => "wgpu",
        }
    }
}
