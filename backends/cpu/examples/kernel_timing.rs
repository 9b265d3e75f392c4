//! Times the CPU backend's heavy kernels: the fused row kernels of the loss on the paper's shapes
//! (B = 256 anchors, N = 2B + K = 66048 contrast columns; PBSD: 5 crops x 256 rows x (1 + K)
//! columns), convolutions of ResNet-32 (CIFAR) and ResNet-50 layers, and batch norm:
//! `cargo run --release -p dscl-cpu --example kernel_timing [threads]` (0 = all cores).

use dscl_core::backend::prelude::*;
use dscl_core::desc::{
    BatchNormShape, ContrastiveRowsDesc, Conv2dShape, PositiveWeighting, RowsDesc,
};
use dscl_cpu::CpuBackend;
use std::time::Instant;

fn time<F: FnMut()>(name: &str, elems: usize, mut f: F) {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{name:40} {:8.2} ms  {:6.3} ns/elem  {:6.1} GB/s (read+write once)",
        best * 1e3,
        best * 1e9 / elems as f64,
        8.0 * elems as f64 / best / 1e9
    );
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let be = if threads == 0 {
        CpuBackend::new()
    } else {
        CpuBackend::with_threads(threads).unwrap()
    };
    println!("{}", be.device_name());
    let (b, k) = (256usize, 65536usize);
    let n = 2 * b + k;
    let mut s = 12345u32;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s % 20001) as f32 / 10000.0 - 1.0
    };
    let logits_host: Vec<f32> = (0..b * n).map(|_| rnd() / 0.07).collect();
    let labels_host: Vec<u32> = (0..n)
        .map(|j| {
            if j < 2 * b {
                (j % b) as u32 % 1000
            } else {
                (j as u32 * 7919) % 1000
            }
        })
        .collect();
    let mut logits = be.alloc(b * n).unwrap();
    let mut labels = be.alloc_index(n).unwrap();
    be.upload_index(&mut labels, 0, &labels_host).unwrap();
    let mut loss = be.alloc(b).unwrap();
    let desc = ContrastiveRowsDesc {
        rows: b,
        row_offset: 0,
        batch: b,
        cols: n,
        valid_cols: n,
        num_classes: 1000,
        weighting: PositiveWeighting::Decoupled { beta: 8.0 },
        grad_scale: 1.0 / b as f64,
    };
    time("contrastive_rows 256 x 66048 (DSCL)", b * n, || {
        be.upload(&mut logits, 0, &logits_host).unwrap();
        be.contrastive_rows(&desc, &mut logits, &labels, &mut loss)
            .unwrap();
    });
    time("  (upload alone)", b * n, || {
        be.upload(&mut logits, 0, &logits_host).unwrap();
    });

    let rows = 5 * b;
    let cols = 1 + k;
    let x_host: Vec<f32> = (0..rows * cols).map(|_| rnd() / 0.07).collect();
    let mut x = be.alloc(rows * cols).unwrap();
    be.upload(&mut x, 0, &x_host).unwrap();
    let mut y = be.alloc(rows * cols).unwrap();
    let rd = RowsDesc::new(rows, cols);
    time("row_softmax 1280 x 65537", rows * cols, || {
        be.row_softmax(&rd, &x, &mut y).unwrap();
    });
    let mut out = be.alloc(rows).unwrap();
    time("row_logsumexp 1280 x 65537", rows * cols, || {
        be.row_logsumexp(&rd, &x, &mut out).unwrap();
    });
    let mut lg = be.alloc(rows * cols).unwrap();
    time("soft_cross_entropy 1280 x 65537", rows * cols, || {
        be.copy(&x, 0, &mut lg, 0, rows * cols).unwrap();
        be.soft_cross_entropy(&rd, 1.0 / rows as f64, &mut lg, &y, &mut out)
            .unwrap();
    });
    time("  (copy alone)", rows * cols, || {
        be.copy(&x, 0, &mut lg, 0, rows * cols).unwrap();
    });
    assert_eq!(be.take_fault().unwrap(), None);
    drop((x, y, lg, out, logits, loss));

    // (batch, in_c, size, out_c, kernel, stride, padding)
    for (n, c, h, o, k, st, p) in [
        (256, 16, 32, 16, 3, 1, 1),
        (256, 32, 16, 64, 3, 2, 1),
        (32, 64, 56, 64, 3, 1, 1),
        (32, 256, 56, 64, 1, 1, 0),
        (32, 3, 224, 64, 7, 2, 3),
    ] {
        let shape = Conv2dShape {
            batch: n,
            in_channels: c,
            in_height: h,
            in_width: h,
            out_channels: o,
            kernel_h: k,
            kernel_w: k,
            stride: st,
            padding: p,
        };
        let x = be.alloc(shape.input_len()).unwrap();
        let w = be.alloc(shape.weight_len()).unwrap();
        let mut y = be.alloc(shape.output_len()).unwrap();
        let mut gx = be.alloc(shape.input_len()).unwrap();
        let mut gw = be.alloc(shape.weight_len()).unwrap();
        let mut ws = be.alloc(be.conv2d_workspace_len(&shape)).unwrap();
        let name = format!("conv n{n} c{c} h{h} o{o} k{k} s{st}");
        let fl = shape.flops();
        let t = Instant::now();
        be.conv2d_forward(&shape, &x, &w, &mut y, &mut ws).unwrap();
        let tf = t.elapsed().as_secs_f64();
        let t = Instant::now();
        be.conv2d_backward_data(&shape, &y, &w, &mut gx, &mut ws)
            .unwrap();
        let td = t.elapsed().as_secs_f64();
        let t = Instant::now();
        be.conv2d_backward_filter(&shape, &x, &y, &mut gw, &mut ws)
            .unwrap();
        let tw = t.elapsed().as_secs_f64();
        println!(
            "{name:40} fwd {:7.2} ms ({:4.0} GF/s)  bwd-data {:7.2} ms  bwd-filter {:7.2} ms  all {:4.0} GF/s",
            tf * 1e3,
            fl / tf / 1e9,
            td * 1e3,
            tw * 1e3,
            3.0 * fl / (tf + td + tw) / 1e9
        );
        if c == 64 {
            let bn = BatchNormShape {
                batch: n,
                channels: o,
                spatial: shape.out_height() * shape.out_width(),
                eps: 1e-5,
                momentum: 0.1,
                groups: 1,
                running_every: 1,
            };
            let g = be.alloc(o).unwrap();
            let mut st1 = be.alloc(o).unwrap();
            let mut st2 = be.alloc(o).unwrap();
            let mut st3 = be.alloc(o).unwrap();
            let mut st4 = be.alloc(o).unwrap();
            let mut gg = be.alloc(o).unwrap();
            let mut gb = be.alloc(o).unwrap();
            time("batch_norm forward_train", bn.len(), || {
                be.batch_norm_forward_train(
                    &bn,
                    BnTrain {
                        x: &y,
                        gamma: &g,
                        beta: &g,
                        y: &mut gx,
                        save_mean: &mut st1,
                        save_invstd: &mut st2,
                        running_mean: &mut st3,
                        running_var: &mut st4,
                    },
                )
                .unwrap()
            });
            time("batch_norm backward", bn.len(), || {
                be.batch_norm_backward(
                    &bn,
                    BnBackward {
                        x: &y,
                        grad_y: &y,
                        gamma: &g,
                        save_mean: &st1,
                        save_invstd: &st2,
                        grad_x: &mut gx,
                        grad_gamma: &mut gg,
                        grad_beta: &mut gb,
                    },
                )
                .unwrap()
            });
            time("relu forward", bn.len(), || {
                be.relu_forward(&y, &mut gx, bn.len()).unwrap()
            });
        }
    }
}
