//! Tensors larger than one storage binding: convolution, pooling and batch norm bind them in
//! runs of whole images. A context whose binding limit is lowered to 4 KiB makes every tensor
//! here larger than a binding (each test asserts so: a whole-tensor binding would be refused),
//! and each result must equal the one computed on the same device with the adapter's own
//! limit, where nothing is split (the path the conformance suite checks against the reference).

use std::rc::Rc;

use dscl_core::backend::prelude::*;
use dscl_core::desc::{BatchNormShape, Conv2dShape, PoolShape};
use dscl_wgpu::{GpuContext, WgpuBackend, WgpuBuffer};

const CAP_BYTES: u64 = 4096;

fn context() -> Option<Rc<GpuContext>> {
    match GpuContext::new() {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            assert!(
                std::env::var("CI").is_err(),
                "no wgpu adapter in CI (install mesa-vulkan-drivers): {e}"
            );
            println!("skipped: no wgpu adapter ({e})");
            None
        }
    }
}

/// Deterministic values in [-1, 1) plus `offset`.
fn values(len: usize, seed: u64, offset: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0 + offset
        })
        .collect()
}

fn upload(be: &WgpuBackend, data: &[f32]) -> WgpuBuffer<f32> {
    let mut buf = be.alloc(data.len()).unwrap();
    be.upload(&mut buf, 0, data).unwrap();
    buf
}

fn download(be: &WgpuBackend, buf: &WgpuBuffer<f32>, len: usize) -> Vec<f32> {
    let mut out = vec![0.0; len];
    be.download(buf, 0, &mut out).unwrap();
    out
}

/// Runs `op` with the adapter's binding limit, then again with the limit lowered to
/// [`CAP_BYTES`], on the same device; returns both results.
fn whole_and_split<R>(
    ctx: &Rc<GpuContext>,
    largest_tensor: usize,
    op: impl Fn(&WgpuBackend) -> R,
) -> (R, R) {
    assert!(
        largest_tensor as u64 * 4 > CAP_BYTES,
        "the test tensor must exceed the lowered limit"
    );
    let whole = op(&WgpuBackend::with_context(ctx.clone()));
    ctx.limit_binding_bytes(CAP_BYTES);
    let split = op(&WgpuBackend::with_context(ctx.clone()));
    (whole, split)
}

fn assert_close(what: &str, whole: &[f32], split: &[f32], tol: f32) {
    assert_eq!(whole.len(), split.len(), "{what}: lengths");
    for (i, (&w, &s)) in whole.iter().zip(split).enumerate() {
        assert!(
            (w - s).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: whole {w}, split {s}"
        );
    }
}

#[test]
fn convolution_runs_over_image_runs() {
    let Some(ctx) = context() else { return };
    for (stride, padding) in [(1, 1), (2, 0)] {
        let shape = Conv2dShape {
            batch: 5,
            in_channels: 3,
            in_height: 9,
            in_width: 9,
            out_channels: 4,
            kernel_h: 3,
            kernel_w: 3,
            stride,
            padding,
        };
        let (input, weight) = (
            values(shape.input_len(), 1, 0.0),
            values(shape.weight_len(), 2, 0.0),
        );
        let grad_out = values(shape.output_len(), 3, 0.0);
        let grad_weight0 = values(shape.weight_len(), 4, 0.0);
        let largest = shape.input_len().max(shape.output_len());
        let (whole, split) = whole_and_split(&ctx, largest, |be| {
            let mut ws = be.alloc(be.conv2d_workspace_len(&shape).max(1)).unwrap();
            let (x, w, gy) = (
                upload(be, &input),
                upload(be, &weight),
                upload(be, &grad_out),
            );
            let mut y = be.alloc(shape.output_len()).unwrap();
            let mut gx = be.alloc(shape.input_len()).unwrap();
            let mut gw = upload(be, &grad_weight0);
            be.conv2d_forward(&shape, &x, &w, &mut y, &mut ws).unwrap();
            be.conv2d_backward_data(&shape, &gy, &w, &mut gx, &mut ws)
                .unwrap();
            be.conv2d_backward_filter(&shape, &x, &gy, &mut gw, &mut ws)
                .unwrap();
            [
                download(be, &y, shape.output_len()),
                download(be, &gx, shape.input_len()),
                download(be, &gw, shape.weight_len()),
            ]
        });
        assert_eq!(whole[0], split[0], "forward, stride {stride}");
        assert_eq!(whole[1], split[1], "backward-data, stride {stride}");
        // Runs add into grad_weight one after another: another summation order.
        assert_close("backward-filter", &whole[2], &split[2], 1e-5);
    }
}

#[test]
fn pooling_runs_over_image_runs() {
    let Some(ctx) = context() else { return };
    let shape = PoolShape {
        batch: 6,
        channels: 3,
        in_height: 8,
        in_width: 8,
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    let (in_len, out_len) = (shape.input_len(), shape.output_len());
    let x0 = values(in_len, 5, 0.0);
    let gy0 = values(out_len, 6, 0.0);
    let (b, c, s) = (6, 40, 10);
    let gap_x0 = values(b * c * s, 7, 0.0);
    let gap_gy0 = values(b * c, 8, 0.0);
    let (whole, split) = whole_and_split(&ctx, in_len.min(b * c * s), |be| {
        let (x, gy) = (upload(be, &x0), upload(be, &gy0));
        let mut y = be.alloc(out_len).unwrap();
        let mut argmax = be.alloc_index(out_len).unwrap();
        let mut gx = be.alloc(in_len).unwrap();
        be.max_pool2d_forward(&shape, &x, &mut y, &mut argmax)
            .unwrap();
        be.max_pool2d_backward(&shape, &gy, &argmax, &mut gx)
            .unwrap();
        let mut argmax_host = vec![0; out_len];
        be.download_index(&argmax, 0, &mut argmax_host).unwrap();

        let (gap_x, gap_gy) = (upload(be, &gap_x0), upload(be, &gap_gy0));
        let mut gap_y = be.alloc(b * c).unwrap();
        let mut gap_gx = be.alloc(b * c * s).unwrap();
        be.global_avg_pool_forward(&gap_x, &mut gap_y, b, c, s)
            .unwrap();
        be.global_avg_pool_backward(&gap_gy, &mut gap_gx, b, c, s)
            .unwrap();
        (
            [
                download(be, &y, out_len),
                download(be, &gx, in_len),
                download(be, &gap_y, b * c),
                download(be, &gap_gx, b * c * s),
            ],
            argmax_host,
        )
    });
    assert_eq!(whole.1, split.1, "max-pool argmax");
    for (i, what) in [
        "max-pool y",
        "max-pool grad_x",
        "avg-pool y",
        "avg-pool grad_x",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(whole.0[i], split.0[i], "{what}");
    }
}

#[test]
fn max_pool_fault_names_the_output_in_the_whole_tensor() {
    let Some(ctx) = context() else { return };
    let shape = PoolShape {
        batch: 6,
        channels: 3,
        in_height: 8,
        in_width: 8,
        kernel: 2,
        stride: 2,
        padding: 0,
    };
    let mut x0 = values(shape.input_len(), 9, 0.0);
    // Image 5, channel 1, row 2, column 3 lies in output (5 * 3 + 1) * 16 + 1 * 4 + 1.
    x0[((5 * 3 + 1) * 8 + 2) * 8 + 3] = f32::NAN;
    let (whole, split) = whole_and_split(&ctx, shape.input_len(), |be| {
        let x = upload(be, &x0);
        let mut y = be.alloc(shape.output_len()).unwrap();
        let mut argmax = be.alloc_index(shape.output_len()).unwrap();
        be.max_pool2d_forward(&shape, &x, &mut y, &mut argmax)
            .unwrap();
        be.take_fault().unwrap().map(|f| f.index)
    });
    assert_eq!(whole, Some((5 * 3 + 1) * 16 + 4 + 1));
    assert_eq!(split, whole);
}

#[test]
fn batch_norm_accumulates_over_image_runs() {
    let Some(ctx) = context() else { return };
    // A large mean next to a small spread: the two-pass statistics must survive the split.
    let one = BatchNormShape {
        batch: 7,
        channels: 3,
        spatial: 50,
        eps: 1e-5,
        momentum: 0.1,
        groups: 1,
        running_every: 1,
    };
    // Three statistics groups, each larger than the lowered binding (runs of two images), all
    // moving the running statistics in turn; then only group 0 moving them.
    let grouped = BatchNormShape {
        batch: 9,
        spatial: 120,
        groups: 3,
        ..one
    };
    let only_first = BatchNormShape {
        running_every: 3,
        ..grouped
    };
    for shape in [one, grouped, only_first] {
        batch_norm_whole_and_split(&ctx, &shape);
    }
}

fn batch_norm_whole_and_split(ctx: &Rc<GpuContext>, shape: &BatchNormShape) {
    let len = shape.len();
    let (ch, saved) = (shape.channels, shape.saved_len());
    let (x0, gy0) = (values(len, 10, 100.0), values(len, 11, 0.0));
    let (gamma0, beta0) = (values(ch, 12, 1.0), values(ch, 13, 0.0));
    let (rm0, rv0) = (values(ch, 14, 0.0), values(ch, 15, 2.0));
    let (gg0, gb0) = (values(ch, 16, 0.0), values(ch, 17, 0.0));
    assert!(
        shape.group().len() * 4 > CAP_BYTES as usize,
        "each statistics group must exceed the lowered limit"
    );
    let (whole, split) = whole_and_split(ctx, len, |be| {
        let (x, gy, gamma, beta) = (
            upload(be, &x0),
            upload(be, &gy0),
            upload(be, &gamma0),
            upload(be, &beta0),
        );
        let (mut rm, mut rv) = (upload(be, &rm0), upload(be, &rv0));
        let (mut gg, mut gb) = (upload(be, &gg0), upload(be, &gb0));
        let mut y = be.alloc(len).unwrap();
        let mut y_inference = be.alloc(len).unwrap();
        let mut gx = be.alloc(len).unwrap();
        let mut mean = be.alloc(saved).unwrap();
        let mut invstd = be.alloc(saved).unwrap();
        be.batch_norm_forward_train(
            shape,
            BnTrain {
                x: &x,
                gamma: &gamma,
                beta: &beta,
                y: &mut y,
                save_mean: &mut mean,
                save_invstd: &mut invstd,
                running_mean: &mut rm,
                running_var: &mut rv,
            },
        )
        .unwrap();
        be.batch_norm_backward(
            shape,
            BnBackward {
                x: &x,
                grad_y: &gy,
                gamma: &gamma,
                save_mean: &mean,
                save_invstd: &invstd,
                grad_x: &mut gx,
                grad_gamma: &mut gg,
                grad_beta: &mut gb,
            },
        )
        .unwrap();
        be.batch_norm_forward_inference(
            shape,
            BnInference {
                x: &x,
                gamma: &gamma,
                beta: &beta,
                running_mean: &rm,
                running_var: &rv,
                y: &mut y_inference,
            },
        )
        .unwrap();
        [
            download(be, &y, len),
            download(be, &mean, saved),
            download(be, &invstd, saved),
            download(be, &rm, ch),
            download(be, &rv, ch),
            download(be, &gx, len),
            download(be, &gg, ch),
            download(be, &gb, ch),
            download(be, &y_inference, len),
        ]
    });
    let names = [
        "y",
        "save_mean",
        "save_invstd",
        "running_mean",
        "running_var",
        "grad_x",
        "grad_gamma",
        "grad_beta",
        "inference y",
    ];
    for (i, what) in names.iter().enumerate() {
        assert_close(what, &whole[i], &split[i], 2e-5);
    }
    // The split pass ran: every group's statistics moved from their start.
    assert!(split[1].iter().all(|m| (m - 100.0).abs() < 0.5));
}

#[test]
fn an_image_larger_than_a_binding_is_an_error() {
    let Some(ctx) = context() else { return };
    ctx.limit_binding_bytes(CAP_BYTES);
    let be = WgpuBackend::with_context(ctx);
    let (b, c, s) = (2, 3, 400);
    let x = upload(&be, &values(b * c * s, 18, 0.0));
    let mut y = be.alloc(b * c).unwrap();
    let err = be.global_avg_pool_forward(&x, &mut y, b, c, s).unwrap_err();
    assert!(
        err.to_string().contains("storage binding limit"),
        "unexpected error: {err}"
    );
}

#[test]
fn row_kernels_run_over_row_runs() {
    use dscl_core::desc::{ContrastiveRowsDesc, PositiveWeighting, RowsDesc};
    let Some(ctx) = context() else { return };
    let (rows, cols) = (40, 100);
    let len = rows * cols;
    let desc = RowsDesc {
        rows,
        cols,
        valid_cols: 97,
    };
    let x0 = values(len, 19, 0.0);
    let gy0 = values(len, 20, 0.0);
    let targets0: Vec<f32> = values(len, 21, 0.0).iter().map(|v| v.abs()).collect();
    let row_labels: Vec<u32> = (0..rows as u32).map(|r| r * 7 % 97).collect();
    // Contrast labels over 5 classes, one per column; anchors are the first 40 rows of the batch.
    let contrast_labels: Vec<u32> = (0..cols as u32).map(|j| j * 3 % 5).collect();
    let contrastive = ContrastiveRowsDesc {
        rows,
        row_offset: 0,
        batch: rows,
        cols,
        valid_cols: 96,
        num_classes: 5,
        weighting: PositiveWeighting::Decoupled { beta: 0.3 },
        grad_scale: 1.0 / rows as f64,
    };
    let (whole, split) = whole_and_split(&ctx, len, |be| {
        let (x, gy, targets) = (upload(be, &x0), upload(be, &gy0), upload(be, &targets0));
        let mut labels = be.alloc_index(rows).unwrap();
        be.upload_index(&mut labels, 0, &row_labels).unwrap();
        let mut clabels = be.alloc_index(cols).unwrap();
        be.upload_index(&mut clabels, 0, &contrast_labels).unwrap();
        let mut y = be.alloc(len).unwrap();
        let mut norms = be.alloc(rows).unwrap();
        let mut gx = be.alloc(len).unwrap();
        be.l2_normalize_forward(&x, &mut y, &mut norms, rows, cols)
            .unwrap();
        be.l2_normalize_backward(&y, &norms, &gy, &mut gx, rows, cols)
            .unwrap();
        let mut softmax = be.alloc(len).unwrap();
        let mut lse = be.alloc(rows).unwrap();
        be.row_softmax(&desc, &x, &mut softmax).unwrap();
        be.row_logsumexp(&desc, &x, &mut lse).unwrap();
        let (mut soft_logits, mut hard_logits, mut contrast_logits) =
            (upload(be, &x0), upload(be, &x0), upload(be, &x0));
        let (mut soft_loss, mut hard_loss, mut contrast_loss) = (
            be.alloc(rows).unwrap(),
            be.alloc(rows).unwrap(),
            be.alloc(rows).unwrap(),
        );
        be.soft_cross_entropy(&desc, 0.5, &mut soft_logits, &targets, &mut soft_loss)
            .unwrap();
        be.softmax_cross_entropy(&desc, 0.5, &mut hard_logits, &labels, &mut hard_loss)
            .unwrap();
        be.contrastive_rows(
            &contrastive,
            &mut contrast_logits,
            &clabels,
            &mut contrast_loss,
        )
        .unwrap();
        assert_eq!(be.take_fault().unwrap(), None);
        [
            download(be, &y, len),
            download(be, &norms, rows),
            download(be, &gx, len),
            download(be, &softmax, len),
            download(be, &lse, rows),
            download(be, &soft_logits, len),
            download(be, &soft_loss, rows),
            download(be, &hard_logits, len),
            download(be, &hard_loss, rows),
            download(be, &contrast_logits, len),
            download(be, &contrast_loss, rows),
        ]
    });
    let names = [
        "l2 y",
        "l2 norms",
        "l2 grad_x",
        "softmax",
        "logsumexp",
        "soft CE gradient",
        "soft CE loss",
        "hard CE gradient",
        "hard CE loss",
        "contrastive gradient",
        "contrastive loss",
    ];
    // A row is one workgroup's in either case: the same arithmetic, bit for bit.
    for (i, what) in names.iter().enumerate() {
        assert_eq!(whole[i], split[i], "{what}");
    }
}

#[test]
fn a_row_fault_names_the_row_in_the_whole_tensor() {
    use dscl_core::desc::RowsDesc;
    let Some(ctx) = context() else { return };
    let (rows, cols) = (40, 100);
    let desc = RowsDesc::new(rows, cols);
    let x0 = values(rows * cols, 22, 0.0);
    let mut labels0: Vec<u32> = vec![1; rows];
    labels0[37] = 1000;
    let (whole, split) = whole_and_split(&ctx, rows * cols, |be| {
        let mut logits = upload(be, &x0);
        let mut labels = be.alloc_index(rows).unwrap();
        be.upload_index(&mut labels, 0, &labels0).unwrap();
        let mut loss = be.alloc(rows).unwrap();
        be.softmax_cross_entropy(&desc, 1.0, &mut logits, &labels, &mut loss)
            .unwrap();
        be.take_fault().unwrap().map(|f| (f.index, f.value))
    });
    assert_eq!(whole, Some((37, 1000)));
    assert_eq!(split, whole);
}

#[test]
fn roi_align_runs_over_image_and_box_runs() {
    use dscl_core::desc::RoiAlignShape;
    use dscl_core::FaultKind;
    let Some(ctx) = context() else { return };
    let shape = RoiAlignShape {
        batch: 4,
        channels: 3,
        height: 12,
        width: 12,
        num_rois: 30,
        pooled_h: 4,
        pooled_w: 4,
        spatial_scale: 0.5,
        sampling_ratio: 2,
        aligned: true,
    };
    let features0 = values(shape.features_len(), 23, 0.0);
    let grad_out0 = values(shape.output_len(), 24, 0.0);
    let grad_features0 = values(shape.features_len(), 25, 0.0);
    // Boxes over every image, in mixed order, in image coordinates (scale 0.5 onto the map);
    // box 21 names image 9, which does not exist.
    let boxes0: Vec<f32> = (0..shape.num_rois)
        .flat_map(|r| {
            let image = if r == 21 { 9.0 } else { ((r * 3) % 4) as f32 };
            let (x, y) = ((r % 5) as f32 * 3.0, (r % 7) as f32 * 2.5);
            [image, x, y, x + 6.0 + (r % 3) as f32, y + 5.0]
        })
        .collect();
    let largest = shape.features_len().min(shape.output_len());
    let (whole, split) = whole_and_split(&ctx, largest, |be| {
        let (features, boxes) = (upload(be, &features0), upload(be, &boxes0));
        let grad_out = upload(be, &grad_out0);
        let mut out = be.alloc(shape.output_len()).unwrap();
        let mut grad_features = upload(be, &grad_features0);
        be.roi_align_forward(&shape, &features, &boxes, &mut out)
            .unwrap();
        let fault = be.take_fault().unwrap();
        be.roi_align_backward(&shape, &grad_out, &boxes, &mut grad_features)
            .unwrap();
        let _ = be.take_fault().unwrap();
        (
            download(be, &out, shape.output_len()),
            download(be, &grad_features, shape.features_len()),
            fault.map(|f| (f.kind, f.index)),
        )
    });
    assert_eq!(whole.2, Some((FaultKind::LabelOutOfRange, 21)));
    assert_eq!(split.2, whole.2);
    assert_eq!(whole.0, split.0, "forward");
    // The backward's float atomics add in a varying order.
    assert_close("backward", &whole.1, &split.1, 1e-5);
    // The invalid box's outputs are zeros, the others are not all zero.
    let per_box = 3 * 4 * 4;
    assert!(split.0[21 * per_box..22 * per_box]
        .iter()
        .all(|&v| v == 0.0));
    assert!(split.0[20 * per_box..21 * per_box]
        .iter()
        .any(|&v| v != 0.0));
}

#[test]
fn sum_adds_its_runs() {
    let Some(ctx) = context() else { return };
    let len = 5000;
    let x0 = values(len, 26, 0.25);
    let (whole, split) = whole_and_split(&ctx, len, |be| {
        let x = upload(be, &x0);
        let mut out = upload(be, &[7.0, 7.0, 7.0]);
        be.sum(&x, len, 0.5, &mut out, 1).unwrap();
        download(be, &out, 3)
    });
    let want = 0.5 * x0.iter().map(|&v| v as f64).sum::<f64>();
    assert!((whole[1] as f64 - want).abs() < 1e-3, "whole {}", whole[1]);
    assert_close("sum", &whole, &split, 1e-5);
    assert_eq!(split[0], 7.0);
    assert_eq!(split[2], 7.0);
}

/// An empty batch is one empty run: work that writes even then still does.
#[test]
fn empty_runs_still_write() {
    use dscl_core::desc::RoiAlignShape;
    use dscl_core::FaultKind;
    let Some(ctx) = context() else { return };
    let be = WgpuBackend::with_context(ctx);
    let x = be.alloc(0).unwrap();
    let mut out = upload(&be, &[7.0, 7.0]);
    be.sum(&x, 0, 2.0, &mut out, 1).unwrap();
    assert_eq!(download(&be, &out, 2), vec![7.0, 0.0]);

    let shape = RoiAlignShape {
        batch: 0,
        channels: 2,
        height: 3,
        width: 3,
        num_rois: 1,
        pooled_h: 2,
        pooled_w: 2,
        spatial_scale: 1.0,
        sampling_ratio: 1,
        aligned: false,
    };
    let features = be.alloc(0).unwrap();
    let boxes = upload(&be, &[0.0, 0.0, 0.0, 2.0, 2.0]);
    let mut output = upload(&be, &[5.0; 8]);
    be.roi_align_forward(&shape, &features, &boxes, &mut output)
        .unwrap();
    assert_eq!(download(&be, &output, 8), vec![0.0; 8]);
    let fault = be.take_fault().unwrap().map(|f| (f.kind, f.index));
    assert_eq!(fault, Some((FaultKind::LabelOutOfRange, 0)));
}
