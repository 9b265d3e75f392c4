//! One SGD training step of a ResNet classifier (forward, cross-entropy, backward, SGD with
//! momentum 0.9 and weight decay 5e-4) on the CPU, wgpu or CUDA backend, in images per second, with
//! the peak resident memory the model, optimizer and step add to the process (host memory: on
//! a GPU it counts only the driver's host side). Each step reads its loss back, so a timed step
//! includes all of its device work.
//!
//!     train_step --arch resnet18-cifar --batch 128 --image 32 --steps 5 [--threads N]
//!     train_step --arch resnet50 --batch 16 --image 224 --steps 3
//!     train_step --backend wgpu --arch resnet32 --batch 128 --image 32 --steps 3
//!     train_step --backend cuda --arch resnet50 --batch 64 --image 224 --steps 5
//!     train_step --backend cuda --precision tf32 --arch resnet50 --batch 64 --image 224
//!
//! `compare/train_step_torch.py` runs the same step in PyTorch; `compare/run_train_step_comparison.sh`
//! runs both side by side.

use std::time::Instant;

use dscl_benches::cli::{self, BackendArgs, BackendJob, FlagPairs, StepTimes};
use dscl_benches::rss::{status_bytes, MIB};
use dscl_core::backend::prelude::*;
use dscl_core::nn::{ResNetClassifier, ResNetConfig, Stem, TensorSet};
use dscl_core::train::{ClassifierStep, SgdConfig, Trainable};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

struct Args {
    backend: BackendArgs,
    arch: String,
    batch: usize,
    image: usize,
    steps: usize,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        backend: BackendArgs::default(),
        arch: "resnet18-cifar".into(),
        batch: 128,
        image: 32,
        steps: 5,
    };
    let mut flags = FlagPairs::from_env();
    while let Some((flag, value)) = flags.next_pair()? {
        if args.backend.accept(&flag, &value)? {
            continue;
        }
        let number = || cli::parse_count(&flag, &value);
        match flag.as_str() {
            "--arch" => args.arch = value,
            "--batch" => args.batch = number()?,
            "--image" => args.image = number()?,
            "--steps" => args.steps = number()?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    Ok(args)
}

/// The classifier's class count: the CIFAR-stem networks are for 10-class 32 px data, the
/// ImageNet ones for ImageNet's 1000 classes.
fn classes_for(cfg: &ResNetConfig) -> usize {
    match cfg.stem {
        Stem::Cifar => 10,
        Stem::ImageNet => 1000,
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args = parse()?;
    cli::run_on_backend(&args.backend, ClassifierBench(&args))
}

struct ClassifierBench<'a>(&'a Args);

impl BackendJob for ClassifierBench<'_> {
    fn run<B: Backend<Elem = f32>>(self, backend: &B, device: &str) -> Result<(), String> {
        bench(backend, self.0, device)
    }
}

fn bench<B: Backend<Elem = f32>>(backend: &B, args: &Args, device: &str) -> Result<(), String> {
    let cfg = cli::resnet_config(&args.arch)?;
    let classes = classes_for(&cfg);
    let err = |e: dscl_core::Error| e.to_string();
    let base = status_bytes("VmRSS").map_err(|e| e.to_string())?;

    let model_def = ResNetClassifier::new(cfg, classes).map_err(err)?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let mut model = Trainable::initialised(backend, &model_def.params, &mut rng).map_err(err)?;
    let mut state = TensorSet::initialised(backend, &model_def.state, &mut rng).map_err(err)?;
    let mut step = ClassifierStep::new(
        backend,
        &model_def.backbone,
        &model_def.fc,
        args.batch,
        args.image,
    )
    .map_err(err)?;
    let pixels = args.batch * 3 * args.image * args.image;
    let host: Vec<f32> = (0..pixels)
        .map(|_| (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0)
        .collect();
    let labels: Vec<u32> = (0..args.batch)
        .map(|_| rng.next_u32() % classes as u32)
        .collect();
    let mut images = backend.alloc(pixels).map_err(err)?;
    backend.upload(&mut images, 0, &host).map_err(err)?;
    let mut y = backend.alloc_index(args.batch).map_err(err)?;
    backend.upload_index(&mut y, 0, &labels).map_err(err)?;
    let sgd = SgdConfig::STAGE1;

    let mut one_step = || {
        step.cross_entropy_step(
            backend,
            &model_def.backbone,
            &model_def.fc,
            &mut model,
            &mut state,
            &images,
            &y,
            &sgd,
            0.1,
        )
    };
    // Warm-up: first-touch of every buffer, thread pool start.
    let first = one_step().map_err(err)?;
    let mut times = Vec::new();
    let mut loss = first;
    for _ in 0..args.steps {
        let t = Instant::now();
        loss = one_step().map_err(err)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let times = StepTimes::of(times).ok_or("no step was timed")?;
    let median = times.median_s;
    let peak = status_bytes("VmHWM").map_err(|e| e.to_string())?;
    println!(
        "impl=dscl backend={} precision={} device={} arch={} batch={} image={} params={} median_s={:.4} min_s={:.4} \
         images_per_s={:.2} peak_rss_mib={:.1} peak_extra_mib={:.1} loss_first={:.4} loss_last={:.4}",
        args.backend.name,
        args.backend.precision,
        device,
        args.arch,
        args.batch,
        args.image,
        model_def.params.total_len(),
        median,
        times.min_s,
        args.batch as f64 / median,
        peak as f64 / MIB,
        peak.saturating_sub(base) as f64 / MIB,
        first,
        loss
    );
    Ok(())
}
