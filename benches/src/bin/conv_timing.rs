//! Per-layer timings of the CPU backend's convolution training kernels (and batch norm, ReLU,
//! max-pool, add) on every distinct layer shape of ResNet-18 (CIFAR stem, 32x32, batch 128) and
//! torchvision ResNet-50 (224x224, batch 16): the Rust side of
//! `benches/compare/conv_torch.py`, printing the same table (median of `--reps` runs after
//! warm-up, milliseconds).
//!
//! `cargo run --release -p dscl-benches --bin conv_timing -- [--threads 2] [--reps 5]
//! [--filter SUBSTR] [--no-ops] [--min] [--cpu]` (`--min`: the fastest run instead of the median, for
//! A/B comparisons on a busy machine; `--cpu`: CPU time of the threads / threads instead of wall
//! time)

use std::time::Instant;

use dscl_core::backend::prelude::*;
use dscl_core::desc::{BatchNormShape, Conv2dShape, PoolShape};
use dscl_cpu::CpuBackend;

type Shape = (&'static str, &'static str, [usize; 8], usize);

/// (net, name, [N, C, H, W, O, k, stride, pad], uses): the list of `conv_torch.py`.
const SHAPES: &[Shape] = &[
    ("r18", "stem.3x3", [128, 3, 32, 32, 64, 3, 1, 1], 1),
    ("r18", "l1.3x3", [128, 64, 32, 32, 64, 3, 1, 1], 4),
    ("r18", "l2.3x3s2", [128, 64, 32, 32, 128, 3, 2, 1], 1),
    ("r18", "l2.ds1x1s2", [128, 64, 32, 32, 128, 1, 2, 0], 1),
    ("r18", "l2.3x3", [128, 128, 16, 16, 128, 3, 1, 1], 3),
    ("r18", "l3.3x3s2", [128, 128, 16, 16, 256, 3, 2, 1], 1),
    ("r18", "l3.ds1x1s2", [128, 128, 16, 16, 256, 1, 2, 0], 1),
    ("r18", "l3.3x3", [128, 256, 8, 8, 256, 3, 1, 1], 3),
    ("r18", "l4.3x3s2", [128, 256, 8, 8, 512, 3, 2, 1], 1),
    ("r18", "l4.ds1x1s2", [128, 256, 8, 8, 512, 1, 2, 0], 1),
    ("r18", "l4.3x3", [128, 512, 4, 4, 512, 3, 1, 1], 3),
    ("r50", "stem.7x7s2", [16, 3, 224, 224, 64, 7, 2, 3], 1),
    ("r50", "l1.1x1.64-64", [16, 64, 56, 56, 64, 1, 1, 0], 1),
    ("r50", "l1.3x3", [16, 64, 56, 56, 64, 3, 1, 1], 3),
    ("r50", "l1.1x1.64-256", [16, 64, 56, 56, 256, 1, 1, 0], 4),
    ("r50", "l1.1x1.256-64", [16, 256, 56, 56, 64, 1, 1, 0], 2),
    ("r50", "l2.1x1.256-128", [16, 256, 56, 56, 128, 1, 1, 0], 1),
    ("r50", "l2.3x3s2", [16, 128, 56, 56, 128, 3, 2, 1], 1),
    ("r50", "l2.ds1x1s2", [16, 256, 56, 56, 512, 1, 2, 0], 1),
    ("r50", "l2.1x1.128-512", [16, 128, 28, 28, 512, 1, 1, 0], 4),
    ("r50", "l2.1x1.512-128", [16, 512, 28, 28, 128, 1, 1, 0], 3),
    ("r50", "l2.3x3", [16, 128, 28, 28, 128, 3, 1, 1], 3),
    ("r50", "l3.1x1.512-256", [16, 512, 28, 28, 256, 1, 1, 0], 1),
    ("r50", "l3.3x3s2", [16, 256, 28, 28, 256, 3, 2, 1], 1),
    ("r50", "l3.ds1x1s2", [16, 512, 28, 28, 1024, 1, 2, 0], 1),
    (
        "r50",
        "l3.1x1.256-1024",
        [16, 256, 14, 14, 1024, 1, 1, 0],
        6,
    ),
    (
        "r50",
        "l3.1x1.1024-256",
        [16, 1024, 14, 14, 256, 1, 1, 0],
        5,
    ),
    ("r50", "l3.3x3", [16, 256, 14, 14, 256, 3, 1, 1], 5),
    (
        "r50",
        "l4.1x1.1024-512",
        [16, 1024, 14, 14, 512, 1, 1, 0],
        1,
    ),
    ("r50", "l4.3x3s2", [16, 512, 14, 14, 512, 3, 2, 1], 1),
    ("r50", "l4.ds1x1s2", [16, 1024, 14, 14, 2048, 1, 2, 0], 1),
    ("r50", "l4.1x1.512-2048", [16, 512, 7, 7, 2048, 1, 1, 0], 3),
    ("r50", "l4.1x1.2048-512", [16, 2048, 7, 7, 512, 1, 1, 0], 2),
    ("r50", "l4.3x3", [16, 512, 7, 7, 512, 3, 1, 1], 2),
];

/// (net, name, kind, [N, C, H, W]): the other kernels of `conv_torch.py`.
const OPS: &[(&str, &str, &str, [usize; 4])] = &[
    ("r18", "bn.64x32", "bn", [128, 64, 32, 32]),
    ("r50", "bn.64x112", "bn", [16, 64, 112, 112]),
    ("r50", "bn.256x56", "bn", [16, 256, 56, 56]),
    ("r18", "relu.64x32", "relu", [128, 64, 32, 32]),
    ("r50", "relu.256x56", "relu", [16, 256, 56, 56]),
    ("r18", "add.64x32", "add", [128, 64, 32, 32]),
    ("r50", "add.256x56", "add", [16, 256, 56, 56]),
    ("r50", "maxpool.64x112", "maxpool", [16, 64, 112, 112]),
];

/// Set by `--min`: report the fastest run instead of the median.
static USE_MIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set by `--cpu`: time runs by the CPU time of the process's threads (Linux
/// `/proc/self/task/*/schedstat`) divided by the thread count, instead of wall time: less
/// disturbed by other processes taking the cores (cache sharing still shows).
static USE_CPU: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Nanoseconds the process's threads have run.
fn cpu_ns() -> Option<u64> {
    let mut total = 0;
    for t in std::fs::read_dir("/proc/self/task").ok()? {
        let s = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

fn median_ms<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    for _ in 0..2 {
        f();
    }
    let mut ts: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let threads = USE_CPU.load(std::sync::atomic::Ordering::Relaxed);
            if threads > 0 {
                if let Some(c0) = cpu_ns() {
                    f();
                    return (cpu_ns().unwrap_or(c0) - c0) as f64 / 1e6 / threads as f64;
                }
            }
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ts.sort_by(f64::total_cmp);
    if USE_MIN.load(std::sync::atomic::Ordering::Relaxed) {
        return ts[0];
    }
    let m = ts.len() / 2;
    if ts.len() % 2 == 1 {
        ts[m]
    } else {
        0.5 * (ts[m - 1] + ts[m])
    }
}

fn random(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

type Buf = <CpuBackend<'static> as MemoryOps>::Buffer;

fn buffer(be: &CpuBackend<'static>, len: usize, seed: u64, scale: f32) -> Buf {
    let mut b = be.alloc(len).unwrap();
    be.upload(&mut b, 0, &random(len, seed, scale)).unwrap();
    b
}

fn conv_row(be: &CpuBackend<'static>, sh: &Shape, reps: usize) -> [f64; 3] {
    let [n, c, h, w, o, k, stride, padding] = sh.2;
    let shape = Conv2dShape {
        batch: n,
        in_channels: c,
        in_height: h,
        in_width: w,
        out_channels: o,
        kernel_h: k,
        kernel_w: k,
        stride,
        padding,
    };
    let x = buffer(be, shape.input_len(), 1, 1.0);
    let wt = buffer(be, shape.weight_len(), 2, (2.0 / (c * k * k) as f32).sqrt());
    let gy = buffer(be, shape.output_len(), 3, 1.0);
    let mut y = be.alloc(shape.output_len()).unwrap();
    let mut gx = be.alloc(shape.input_len()).unwrap();
    let mut gw = be.alloc(shape.weight_len()).unwrap();
    let mut ws = be.alloc(be.conv2d_workspace_len(&shape)).unwrap();
    let fwd = median_ms(reps, || {
        be.conv2d_forward(&shape, &x, &wt, &mut y, &mut ws).unwrap()
    });
    let bd = median_ms(reps, || {
        be.conv2d_backward_data(&shape, &gy, &wt, &mut gx, &mut ws)
            .unwrap()
    });
    let bf = median_ms(reps, || {
        be.conv2d_backward_filter(&shape, &x, &gy, &mut gw, &mut ws)
            .unwrap()
    });
    [fwd, bd, bf]
}

fn op_row(
    be: &CpuBackend<'static>,
    kind: &str,
    dims: [usize; 4],
    reps: usize,
) -> Vec<(&'static str, f64)> {
    let [n, c, h, w] = dims;
    let len = n * c * h * w;
    let x = buffer(be, len, 4, 1.0);
    let dy = buffer(be, len, 5, 1.0);
    let mut y = be.alloc(len).unwrap();
    match kind {
        "bn" => {
            let shape = BatchNormShape {
                batch: n,
                channels: c,
                spatial: h * w,
                eps: 1e-5,
                momentum: 0.1,
                groups: 1,
                running_every: 1,
            };
            let gamma = buffer(be, c, 6, 1.0);
            let beta = buffer(be, c, 7, 1.0);
            let mut stats: Vec<Buf> = (0..7).map(|_| be.alloc(c).unwrap()).collect();
            let mut gx = be.alloc(len).unwrap();
            let [mean, invstd, rm, rv, gg, gb, _] = &mut stats[..] else {
                unreachable!()
            };
            let fwd =
                |y: &mut Buf, mean: &mut Buf, invstd: &mut Buf, rm: &mut Buf, rv: &mut Buf| {
                    be.batch_norm_forward_train(
                        &shape,
                        BnTrain {
                            x: &x,
                            gamma: &gamma,
                            beta: &beta,
                            y,
                            save_mean: mean,
                            save_invstd: invstd,
                            running_mean: rm,
                            running_var: rv,
                        },
                    )
                    .unwrap()
                };
            let f = median_ms(reps, || fwd(&mut y, mean, invstd, rm, rv));
            let fb = median_ms(reps, || {
                fwd(&mut y, mean, invstd, rm, rv);
                be.batch_norm_backward(
                    &shape,
                    BnBackward {
                        x: &x,
                        grad_y: &dy,
                        gamma: &gamma,
                        save_mean: mean,
                        save_invstd: invstd,
                        grad_x: &mut gx,
                        grad_gamma: gg,
                        grad_beta: gb,
                    },
                )
                .unwrap()
            });
            vec![("fwd", f), ("fwd+bwd", fb)]
        }
        "relu" => {
            let f = median_ms(reps, || be.relu_forward(&x, &mut y, len).unwrap());
            let mut gx = be.alloc(len).unwrap();
            let b = median_ms(reps, || be.relu_backward(&y, &dy, &mut gx, len).unwrap());
            vec![("fwd", f), ("bwd", b)]
        }
        "add" => vec![(
            "fwd",
            median_ms(reps, || be.add(&x, &dy, &mut y, len).unwrap()),
        )],
        "maxpool" => {
            let shape = PoolShape {
                batch: n,
                channels: c,
                in_height: h,
                in_width: w,
                kernel: 3,
                stride: 2,
                padding: 1,
            };
            let out = n * c * shape.out_height() * shape.out_width();
            let mut py = be.alloc(out).unwrap();
            let mut idx = be.alloc_index(out).unwrap();
            let pgy = buffer(be, out, 8, 1.0);
            let mut gx = be.alloc(len).unwrap();
            let f = median_ms(reps, || {
                be.max_pool2d_forward(&shape, &x, &mut py, &mut idx)
                    .unwrap()
            });
            let b = median_ms(reps, || {
                be.max_pool2d_backward(&shape, &pgy, &idx, &mut gx).unwrap()
            });
            vec![("fwd", f), ("bwd", b)]
        }
        _ => unreachable!(),
    }
}

/// Flags: `--threads N`, `--reps N`, `--filter SUBSTR`, `--no-ops`, `--cpu`, `--min`.
fn parse_args() -> Result<(usize, usize, String, bool, bool), String> {
    let (mut threads, mut reps, mut filter, mut ops) = (2usize, 5usize, String::new(), true);
    let mut cpu = false;
    let mut args = std::env::args().skip(1);
    let number = |v: Option<String>, flag: &str| -> Result<usize, String> {
        v.and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n >= 1)
            .ok_or(format!("{flag} needs a positive whole number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => threads = number(args.next(), "--threads")?,
            "--reps" => reps = number(args.next(), "--reps")?,
            "--filter" => filter = args.next().ok_or("--filter needs a substring")?,
            "--no-ops" => ops = false,
            "--cpu" => cpu = true,
            "--min" => USE_MIN.store(true, std::sync::atomic::Ordering::Relaxed),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((threads, reps, filter, ops, cpu))
}

fn main() {
    let (threads, reps, filter, ops, cpu) = parse_args().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    let be = CpuBackend::with_threads(threads).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    if cpu {
        USE_CPU.store(threads, std::sync::atomic::Ordering::Relaxed);
    }
    println!(
        "# {}, threads {threads}, reps {reps} (median ms)",
        be.device_name()
    );
    println!(
        "#     {:4} {:18} {:>4} {:>5} {:>4} {:>4} {:>5} k s p {:>4} {:>9} {:>9} {:>9}",
        "net", "name", "N", "C", "H", "W", "O", "uses", "fwd", "bwd_data", "bwd_filt"
    );
    for sh in SHAPES {
        if !format!("{} {}", sh.0, sh.1).contains(&filter) {
            continue;
        }
        let [fwd, bd, bf] = conv_row(&be, sh, reps);
        let [n, c, h, w, o, k, s, p] = sh.2;
        println!(
            "conv  {:4} {:18} {n:4} {c:5} {h:4} {w:4} {o:5} {k} {s} {p} {:4} {fwd:9.3} {bd:9.3} {bf:9.3}",
            sh.0, sh.1, sh.3
        );
    }
    if !ops {
        return;
    }
    for &(net, name, kind, dims) in OPS {
        if !format!("{net} {name}").contains(&filter) {
            continue;
        }
        for (part, ms) in op_row(&be, kind, dims, reps) {
            println!("op    {net:4} {name:18} {part:8} {ms:9.3}");
        }
    }
}
