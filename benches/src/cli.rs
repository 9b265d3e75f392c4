//! Command-line plumbing shared by the training-step benchmarks (`train_step`, `dscl_step`):
//! `--flag value` parsing, the network names they accept, opening the backend they are asked
//! for, and the timing summary they print.

use dscl_core::backend::prelude::*;
use dscl_core::nn::ResNetConfig;
use dscl_cpu::CpuBackend;
use dscl_cuda::{CudaBackend, Precision};
use dscl_wgpu::WgpuBackend;

/// Walks a command line made of `--flag value` pairs.
pub struct FlagPairs<I> {
    args: I,
}

impl FlagPairs<std::iter::Skip<std::env::Args>> {
    /// The process's arguments, without the program name.
    pub fn from_env() -> Self {
        FlagPairs {
            args: std::env::args().skip(1),
        }
    }
}

impl<I: Iterator<Item = String>> FlagPairs<I> {
    pub fn new(args: I) -> Self {
        FlagPairs { args }
    }

    /// The next flag and its value; an error when a flag is last with no value after it.
    pub fn next_pair(&mut self) -> Result<Option<(String, String)>, String> {
        let Some(flag) = self.args.next() else {
            return Ok(None);
        };
        let value = self
            .args
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        Ok(Some((flag, value)))
    }
}

/// A non-negative integer flag value.
pub fn parse_count(flag: &str, value: &str) -> Result<usize, String> {
    value
        .parse::<usize>()
        .map_err(|e| format!("{flag} {value}: {e}"))
}

/// The networks the step benchmarks accept, as `--arch` spells them.
pub const ARCH_NAMES: &str = "resnet18-cifar, resnet18, resnet32, resnet50, tiny";

/// The backbone behind an `--arch` name. `resnet18-cifar` is ResNet-18 with the CIFAR stem
/// (3x3 stride-1 convolution, no max-pool) for 32 px images.
pub fn resnet_config(arch: &str) -> Result<ResNetConfig, String> {
    Ok(match arch {
        "resnet18-cifar" => ResNetConfig::resnet18().with_cifar_stem(),
        "resnet18" => ResNetConfig::resnet18(),
        "resnet32" => ResNetConfig::resnet32(),
        "resnet50" => ResNetConfig::resnet50(),
        "tiny" => ResNetConfig::tiny(),
        _ => return Err(format!("unknown --arch {arch} ({ARCH_NAMES})")),
    })
}

/// A benchmark body, generic over the backend it runs on (a trait, because closures cannot be
/// generic).
pub trait BackendJob {
    /// Runs on `backend`; `device` names it for the result line (no spaces).
    fn run<B: Backend<Elem = f32>>(self, backend: &B, device: &str) -> Result<(), String>;
}

/// The flags that choose and configure the device: `--backend cpu|wgpu|cuda`, `--threads N`
/// (CPU worker threads; default: the machine's count) and `--precision fp32|tf32|bf16`
/// (CUDA's GEMM and convolutions; the other backends compute in fp32 only).
pub struct BackendArgs {
    pub name: String,
    pub threads: Option<usize>,
    pub precision: Precision,
}

impl Default for BackendArgs {
    fn default() -> Self {
        BackendArgs {
            name: "cpu".into(),
            threads: None,
            precision: Precision::Fp32,
        }
    }
}

impl BackendArgs {
    /// Takes `flag value` when it is one of the backend flags; `Ok(false)` when it is not.
    pub fn accept(&mut self, flag: &str, value: &str) -> Result<bool, String> {
        match flag {
            "--backend" => self.name = value.to_string(),
            "--threads" => self.threads = Some(parse_count(flag, value)?),
            "--precision" => self.precision = value.parse()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Opens the backend `args` names (CUDA: device 0) and runs `job` on it.
pub fn run_on_backend(args: &BackendArgs, job: impl BackendJob) -> Result<(), String> {
    args.precision.check_backend(&args.name)?;
    match args.name.as_str() {
        "cpu" => {
            let backend = match args.threads {
                Some(n) => CpuBackend::with_threads(n).map_err(|e| e.to_string())?,
                None => CpuBackend::new(),
            };
            let device = format!("cpu_{}_threads", backend.threads());
            job.run(&backend, &device)
        }
        "wgpu" => {
            let backend = WgpuBackend::new().map_err(|e| e.to_string())?;
            let device = backend.device_name().replace(' ', "_");
            job.run(&backend, &device)
        }
        "cuda" => {
            let backend =
                CudaBackend::with_precision(0, args.precision).map_err(|e| e.to_string())?;
            let device = backend.device_name().replace(' ', "_");
            job.run(&backend, &device)
        }
        other => Err(format!("unknown --backend {other} (cpu, wgpu or cuda)")),
    }
}

/// Median and minimum of per-step times (seconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepTimes {
    pub median_s: f64,
    pub min_s: f64,
}

impl StepTimes {
    /// `None` when no step was timed.
    pub fn of(mut times: Vec<f64>) -> Option<Self> {
        times.sort_by(f64::total_cmp);
        Some(StepTimes {
            median_s: *times.get(times.len() / 2)?,
            min_s: *times.first()?,
        })
    }
}
