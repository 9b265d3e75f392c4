//! The stage-1 loader's throughput: dscl's `Loader` over an image folder, each JPEG decoded and
//! turned into the published stage-1 views (query and key at `--image` px, `--crops` crops of
//! `--crop` px; `stage1_views` with the ImageNet recipe), by `--workers` worker threads in
//! batches of `--batch`, over the set `--passes` times. The first batch (the workers' start) is
//! left out of the rate, as `compare/loader_torch.py` leaves out PyTorch's.
//!
//!     python3 benches/compare/loader_torch.py --make /tmp/jpegs --count 512
//!     loader_timing --root /tmp/jpegs --workers 2
//!     python3 benches/compare/loader_torch.py --root /tmp/jpegs --workers 2
//!
//! Prints one line: impl=dscl workers=.. images=.. seconds=.. images_per_s=.. per_worker=..

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dscl_benches::cli::{self, FlagPairs};
use dscl_runtime::augment::config::AugmentConfig;
use dscl_runtime::augment::views::{stage1_views, Stage1Views};
use dscl_runtime::data::{Dataset, ImageFolder, Loader, LoaderConfig, Transform};

struct Args {
    root: Option<PathBuf>,
    workers: usize,
    batch: usize,
    image: usize,
    crop: usize,
    crops: usize,
    passes: usize,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        root: None,
        workers: 2,
        batch: 64,
        image: 224,
        crop: 64,
        crops: 5,
        passes: 1,
    };
    let mut flags = FlagPairs::from_env();
    while let Some((flag, value)) = flags.next_pair()? {
        let number = || cli::parse_count(&flag, &value);
        match flag.as_str() {
            "--root" => args.root = Some(PathBuf::from(value)),
            "--workers" => args.workers = number()?,
            "--batch" => args.batch = number()?,
            "--image" => args.image = number()?,
            "--crop" => args.crop = number()?,
            "--crops" => args.crops = number()?,
            "--passes" => args.passes = number()?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    for (flag, value) in [
        ("--workers", args.workers),
        ("--batch", args.batch),
        ("--image", args.image),
        ("--crop", args.crop),
        ("--crops", args.crops),
        ("--passes", args.passes),
    ] {
        if value == 0 {
            return Err(format!("{flag} must be at least 1"));
        }
    }
    Ok(args)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let Some(root) = &args.root else {
        anyhow::bail!("--root FOLDER (of class folders of images) is required");
    };
    let data: Arc<dyn Dataset> = Arc::new(ImageFolder::open(root)?);
    let aug = AugmentConfig {
        crop_size: args.crop,
        crops: args.crops,
        ..AugmentConfig::for_image_size(args.image)
    };
    let transform: Transform<Stage1Views> =
        Arc::new(move |img, rng| Ok(stage1_views(img, &aug, rng)));
    let (mut images, mut start) = (0usize, None);
    for pass in 0..args.passes {
        let config = LoaderConfig {
            seed: pass as u64,
            drop_last: true,
            ..LoaderConfig::new(args.batch, args.workers)
        };
        let order = (0..data.len()).collect();
        for batch in Loader::new(data.clone(), order, transform.clone(), config)? {
            let batch = batch?;
            if start.is_none() {
                start = Some(Instant::now());
                continue;
            }
            images += batch.len();
        }
    }
    let Some(start) = start else {
        anyhow::bail!(
            "no batch: {} has fewer than --batch {} images",
            root.display(),
            args.batch
        );
    };
    let seconds = start.elapsed().as_secs_f64();
    let rate = images as f64 / seconds;
    println!(
        "impl=dscl workers={} batch={} image={} crop={} crops={} images={images} \
         seconds={seconds:.3} images_per_s={rate:.1} per_worker={:.1}",
        args.workers,
        args.batch,
        args.image,
        args.crop,
        args.crops,
        rate / args.workers as f64
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let outcome = parse()
        .map_err(anyhow::Error::msg)
        .and_then(|args| run(&args));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loader_timing: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
