//! One complete stage-1 step of DSCL + PBSD (`DsclStep::step`: momentum update of the key
//! encoder, the query / key / crop passes, DSCL + lambda * PBSD, backward, SGD with momentum 0.9
//! and weight decay 5e-4 at the recipe's rate 0.1 x batch / 256, enqueue of the keys) on the
//! CPU, wgpu or CUDA backend, at the paper's ImageNet-LT shapes by default: ResNet-50, 224 px
//! queries and keys, batch 64, C = 5 crops of 64 px, K = 65536, tau 0.07, beta 8, lambda 1.5,
//! d = 128.
//!
//! Inputs and initial weights are random, from `--seed` (default 0): images uniform in
//! [-1, 1), labels uniform over `--classes`, and each crop's box a random rectangle inside its
//! query image (area 0.05 to 0.6 of the image, aspect 3/4 to 4/3, as the recipe's crops),
//! listed crop-major as `DsclBatch` wants. The queue is filled directly before the first step,
//! with random unit keys and random labels (what the official code starts from), marked full,
//! so every step, warm-up or timed, contrasts against K keys; filling it by steps would take
//! K / batch un-timed steps (1024 at the defaults).
//!
//! `--warmup` un-timed steps, then the median and minimum of `--steps` timed steps. Each timed
//! step reads its loss back (as `train_step` does) and then one queue label the step's last
//! kernel wrote, so it includes all of its device work, the SGD update and the enqueue that
//! follow the loss included. `images_per_s` counts the batch's query images (`--batch` per
//! step); each of them also brings a key image and C crops. `peak_rss_mib` and
//! `peak_extra_mib` are host memory as in `train_step` (on a GPU only the driver's host side).
//!
//!     dscl_step --backend cuda                                 # the paper's shapes
//!     dscl_step --backend cuda --precision tf32                # tensor cores (as PyTorch's flags)
//!     dscl_step --arch resnet18-cifar --batch 8 --image 32 --crop 16 --queue 256 --threads 2
//!     dscl_step --backend wgpu --arch tiny --batch 8 --image 32 --crop 16 --queue 256
//!
//! `--phases` then times the step's parts apart (the median of `--steps` each) and prints them
//! on a second line: the encoder's forward and backward over the query batch and over the C
//! crop sets, its forward over the key batch, steps 1-6 together (`forward_backward`: every
//! pass, ROI-align, both losses and their backward), what those leave of them (the losses, the
//! teachers and the copies between), and what the step adds to them (SGD, the momentum update
//! and the enqueue: the step's median less steps 1-6's, so within noise it can come out
//! negative). The crop passes are timed with one set of batch statistics; the step keeps one per
//! crop set, the same work.
//!
//!     dscl_step --arch resnet32 --batch 32 --image 32 --crop 16 --queue 4096 --phases on
//!
//! `compare/dscl_step_torch.py` is the same step in PyTorch; `scripts/gpu-check.sh` runs both
//! on a GPU.

use std::time::Instant;

use dscl_benches::cli::{self, BackendArgs, BackendJob, FlagPairs, StepTimes};
use dscl_benches::loss::{unit_rows, Rng};
use dscl_benches::rss::{status_bytes, MIB};
use dscl_core::backend::prelude::*;
use dscl_core::nn::scratch::Scratch;
use dscl_core::nn::{Encoder, DEFAULT_EMBEDDING_DIM};
use dscl_core::train::{DsclBatch, DsclConfig, DsclModel, DsclStep, StepLosses, StepShape};
use rand::rngs::Xoshiro256PlusPlus;
use rand::SeedableRng;

/// The recipe's crop area, as a fraction of the query image.
const CROP_AREA: (f64, f64) = (0.05, 0.6);
/// The recipe's learning rate for a batch of 256 (scaled linearly with the batch).
const LR_PER_256: f64 = 0.1;

struct Args {
    backend: BackendArgs,
    arch: String,
    batch: usize,
    image: usize,
    crop: usize,
    crops: usize,
    queue: usize,
    classes: usize,
    steps: usize,
    warmup: usize,
    seed: u64,
    phases: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        backend: BackendArgs::default(),
        arch: "resnet50".into(),
        batch: 64,
        image: 224,
        crop: 64,
        crops: 5,
        queue: 65536,
        classes: 1000,
        steps: 5,
        warmup: 1,
        seed: 0,
        phases: false,
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
            "--crop" => args.crop = number()?,
            "--crops" => args.crops = number()?,
            "--queue" => args.queue = number()?,
            "--classes" => args.classes = number()?,
            "--steps" => args.steps = number()?,
            "--warmup" => args.warmup = number()?,
            "--seed" => args.seed = number()? as u64,
            "--phases" => {
                args.phases = match value.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => return Err(format!("--phases takes on or off, not {value}")),
                }
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let at_least_one = [
        ("--batch", args.batch),
        ("--image", args.image),
        ("--crop", args.crop),
        ("--crops", args.crops),
        ("--classes", args.classes),
        ("--steps", args.steps),
    ];
    if let Some((flag, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
        return Err(format!("{flag} must be at least 1"));
    }
    if u32::try_from(args.classes).is_err() {
        return Err(format!("--classes {} is too large", args.classes));
    }
    Ok(args)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("dscl_step: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args = parse()?;
    cli::run_on_backend(&args.backend, Stage1Bench(&args))
}

struct Stage1Bench<'a>(&'a Args);

impl BackendJob for Stage1Bench<'_> {
    fn run<B: Backend<Elem = f32>>(self, backend: &B, device: &str) -> Result<(), String> {
        bench(backend, self.0, device)
    }
}

/// `len` values uniform in [-1, 1).
fn random_images(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| (rng.uniform() * 2.0 - 1.0) as f32)
        .collect()
}

/// `count` labels uniform over `classes`.
fn random_labels(rng: &mut Rng, count: usize, classes: usize) -> Vec<u32> {
    (0..count)
        .map(|_| (rng.next_u64() % classes as u64) as u32)
        .collect()
}

/// `crops * batch` rows `(i, x1, y1, x2, y2)`, crop-major (row `c * batch + i` belongs to
/// image `i`): random boxes inside an `image x image` query, in its pixels.
fn random_crop_boxes(rng: &mut Rng, crops: usize, batch: usize, image: usize) -> Vec<f32> {
    let side = image as f64;
    let mut rows = Vec::with_capacity(crops * batch * 5);
    for _ in 0..crops {
        for i in 0..batch {
            let area = CROP_AREA.0 + rng.uniform() * (CROP_AREA.1 - CROP_AREA.0);
            let aspect = ((3.0f64 / 4.0).ln() + rng.uniform() * (16.0f64 / 9.0).ln()).exp();
            let w = (side * (area * aspect).sqrt()).min(side);
            let h = (side * (area / aspect).sqrt()).min(side);
            let x1 = rng.uniform() * (side - w);
            let y1 = rng.uniform() * (side - h);
            rows.extend([i as f64, x1, y1, x1 + w, y1 + h].map(|v| v as f32));
        }
    }
    rows
}

fn bench<B: Backend<Elem = f32>>(backend: &B, args: &Args, device: &str) -> Result<(), String> {
    let err = |e: dscl_core::Error| e.to_string();
    let base = status_bytes("VmRSS").map_err(|e| e.to_string())?;

    let encoder =
        Encoder::new(cli::resnet_config(&args.arch)?, DEFAULT_EMBEDDING_DIM).map_err(err)?;
    let config = DsclConfig {
        crops: args.crops,
        queue_len: args.queue,
        ..DsclConfig::default()
    };
    let shape = StepShape {
        batch: args.batch,
        image_size: args.image,
        crop_size: args.crop,
        num_classes: args.classes as u32,
    };
    let mut step = DsclStep::new(backend, &encoder, config, shape).map_err(err)?;
    let mut init_rng = Xoshiro256PlusPlus::seed_from_u64(args.seed);
    let mut model = DsclModel::new(backend, &encoder, args.queue, &mut init_rng).map_err(err)?;

    let mut rng = Rng::new(args.seed);
    if args.queue > 0 {
        let dim = encoder.embedding_dim();
        let keys = unit_rows(&mut rng, args.queue, dim);
        let labels = random_labels(&mut rng, args.queue, args.classes);
        backend
            .upload(&mut model.queue.keys, 0, &keys)
            .map_err(err)?;
        backend
            .upload_index(&mut model.queue.labels, 0, &labels)
            .map_err(err)?;
        model.queue.set_position(args.queue, 0).map_err(err)?;
    }

    let (b, c) = (args.batch, args.crops);
    let image_len = b * 3 * args.image * args.image;
    let crops_len = c * b * 3 * args.crop * args.crop;
    let upload = |host: &[f32]| -> Result<B::Buffer, String> {
        let mut buffer = backend.alloc(host.len()).map_err(err)?;
        backend.upload(&mut buffer, 0, host).map_err(err)?;
        Ok(buffer)
    };
    let queries = upload(&random_images(&mut rng, image_len))?;
    let keys = upload(&random_images(&mut rng, image_len))?;
    let crops = upload(&random_images(&mut rng, crops_len))?;
    let crop_boxes = upload(&random_crop_boxes(&mut rng, c, b, args.image))?;
    let mut labels = backend.alloc_index(b).map_err(err)?;
    backend
        .upload_index(&mut labels, 0, &random_labels(&mut rng, b, args.classes))
        .map_err(err)?;
    let batch = DsclBatch {
        queries: &queries,
        keys: &keys,
        crops: &crops,
        crop_boxes: &crop_boxes,
        labels: &labels,
        key_shuffle: None,
    };
    let lr = LR_PER_256 * b as f64 / 256.0;

    let mut one_step = || -> Result<StepLosses, String> {
        let losses = step
            .step(backend, &encoder, &mut model, &batch, lr)
            .map_err(err)?;
        // The loss was read before SGD and the enqueue; a value they wrote waits for them too.
        let mut last_written = [0u32; 1];
        backend
            .download_index(&model.queue.labels, 0, &mut last_written)
            .map_err(err)?;
        Ok(losses)
    };

    let warmup_start = Instant::now();
    let mut first = None;
    for i in 0..args.warmup {
        let start = Instant::now();
        let losses = one_step()?;
        first.get_or_insert(losses);
        // On stderr as it happens, so a run stopped by a timeout still tells a step's cost.
        eprintln!(
            "dscl_step: warm-up step {} of {}: {:.2} s, loss {:.4}",
            i + 1,
            args.warmup,
            start.elapsed().as_secs_f64(),
            losses.total
        );
    }
    let warmup_s = warmup_start.elapsed().as_secs_f64();
    let mut times = Vec::with_capacity(args.steps);
    let mut last = StepLosses::default();
    for _ in 0..args.steps {
        let start = Instant::now();
        last = one_step()?;
        times.push(start.elapsed().as_secs_f64());
        first.get_or_insert(last);
    }
    let first = first.unwrap_or(last);
    let times = StepTimes::of(times).ok_or("no step was timed")?;
    let peak = status_bytes("VmHWM").map_err(|e| e.to_string())?;
    println!(
        "impl=dscl backend={} precision={} device={} arch={} batch={} image={} crop={} crops={} queue={} \
         classes={} seed={} params={} warmup={} steps={} warmup_s={:.2} median_s={:.4} min_s={:.4} \
         ms_per_step={:.1} images_per_s={:.2} peak_rss_mib={:.1} peak_extra_mib={:.1} \
         loss_first={:.4} dscl_first={:.4} pbsd_first={:.4} loss_last={:.4}",
        args.backend.name,
        args.backend.precision,
        device,
        args.arch,
        b,
        args.image,
        args.crop,
        c,
        args.queue,
        args.classes,
        args.seed,
        encoder.params.total_len(),
        args.warmup,
        args.steps,
        warmup_s,
        times.median_s,
        times.min_s,
        times.median_s * 1e3,
        b as f64 / times.median_s,
        peak as f64 / MIB,
        peak.saturating_sub(base) as f64 / MIB,
        first.total,
        first.contrastive,
        first.pbsd,
        last.total,
    );
    if args.phases {
        let parts = StepParts {
            encoder: &encoder,
            queries: &queries,
            keys: &keys,
            crops: &crops,
        };
        time_phases(
            backend,
            args,
            &parts,
            &mut step,
            &mut model,
            &batch,
            times.median_s,
        )?;
    }
    Ok(())
}

/// The encoder and the batch's images, for `--phases`.
struct StepParts<'a, B: Backend> {
    encoder: &'a Encoder,
    queries: &'a B::Buffer,
    keys: &'a B::Buffer,
    crops: &'a B::Buffer,
}

/// The median of `steps` runs of `part`, in milliseconds; each run ends with the read `part`
/// makes last (so a GPU's work is in it).
fn median_ms(steps: usize, mut part: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let start = Instant::now();
        part()?;
        times.push(start.elapsed().as_secs_f64());
    }
    let times = StepTimes::of(times).ok_or("no step was timed")?;
    Ok(times.median_s * 1e3)
}

/// `--phases`: the step's parts timed apart (see the module documentation), on one line.
fn time_phases<B: Backend<Elem = f32>>(
    backend: &B,
    args: &Args,
    parts: &StepParts<'_, B>,
    step: &mut DsclStep<B>,
    model: &mut DsclModel<B>,
    batch: &DsclBatch<'_, B>,
    step_s: f64,
) -> Result<(), String> {
    let err = |e: dscl_core::Error| e.to_string();
    let (b, c, dim) = (args.batch, args.crops, parts.encoder.embedding_dim());
    let enc = parts.encoder;
    let mut one = [0.0f32; 1];
    let steps_1_to_6 = median_ms(args.steps, || {
        step.forward_backward(backend, enc, model, batch)
            .map(|_| ())
            .map_err(err)
    })?;
    let mut query = enc.plan(backend, b, args.image, args.image).map_err(err)?;
    let mut crop_sets = enc
        .plan(backend, c * b, args.crop, args.crop)
        .map_err(err)?;
    let needs = enc
        .needs(backend, &query)
        .max(enc.needs(backend, &crop_sets));
    let mut scratch = Scratch::new(backend, needs).map_err(err)?;
    let mut rng = Rng::new(args.seed ^ 0x5eed);
    let mut gradient = |rows: usize| -> Result<B::Buffer, String> {
        let host = unit_rows(&mut rng, rows, dim);
        let mut buffer = backend.alloc(host.len()).map_err(err)?;
        backend.upload(&mut buffer, 0, &host).map_err(err)?;
        Ok(buffer)
    };
    let (d_query, d_crops) = (gradient(b)?, gradient(c * b)?);
    let mut pass = |record: &mut dscl_core::nn::encoder::EncoderRecord<B>,
                    images: &B::Buffer,
                    d_embeddings: Option<&B::Buffer>,
                    key: bool|
     -> Result<f64, String> {
        median_ms(args.steps, || {
            let (params, state) = match key {
                true => (&model.key_params, &mut model.key_state),
                false => (&model.query.params, &mut model.query_state),
            };
            match d_embeddings {
                None => {
                    enc.forward(backend, params, state, record, images, &mut scratch)
                        .map_err(err)?;
                    backend
                        .download(record.embeddings(), 0, &mut one)
                        .map_err(err)
                }
                Some(d) => {
                    let grads = &mut model.query.grads;
                    enc.backward(backend, params, grads, record, images, d, &mut scratch)
                        .map_err(err)?;
                    let first = grads.buffers().first().ok_or("no gradient tensor")?;
                    backend.download(first, 0, &mut one).map_err(err)
                }
            }
        })
    };
    let query_fwd = pass(&mut query, parts.queries, None, false)?;
    let query_bwd = pass(&mut query, parts.queries, Some(&d_query), false)?;
    let crops_fwd = pass(&mut crop_sets, parts.crops, None, false)?;
    let crops_bwd = pass(&mut crop_sets, parts.crops, Some(&d_crops), false)?;
    let key_fwd = pass(&mut query, parts.keys, None, true)?;
    let passes = query_fwd + query_bwd + crops_fwd + crops_bwd + key_fwd;
    println!(
        "phases: query_fwd_ms={query_fwd:.1} query_bwd_ms={query_bwd:.1} \
         crops_fwd_ms={crops_fwd:.1} crops_bwd_ms={crops_bwd:.1} key_fwd_ms={key_fwd:.1} \
         steps_1_to_6_ms={steps_1_to_6:.1} losses_teachers_copies_ms={:.1} \
         sgd_momentum_enqueue_ms={:.1} step_ms={:.1}",
        steps_1_to_6 - passes,
        step_s * 1e3 - steps_1_to_6,
        step_s * 1e3,
    );
    Ok(())
}
