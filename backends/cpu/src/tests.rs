//! Unit tests of the backend as a whole: memory and arenas, the fault slot, results that do not
//! depend on the thread count, the loss rows at the paper's width against the f64 oracle, and
//! convolution with every workspace size. (Kernel-by-kernel conformance on random shapes is the
//! shared suite in `tests/`.)

use super::*;
use dscl_core::backend::prelude::*;
use dscl_core::desc::{
    BatchNormShape, ContrastiveRowsDesc, Conv2dShape, GemmDesc, MatrixLayout, PoolShape,
    PositiveWeighting, RoiAlignShape, RowsDesc, SgdParams,
};
use dscl_core::reference::{ReferenceBackend, ReferenceBuffer, ReferenceIndexBuffer};
use dscl_core::FaultKind;
use std::vec;
use std::vec::Vec;

pub(crate) fn rand_vec(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            ((s % 20001) as f32 / 10000.0 - 1.0) * scale
        })
        .collect()
}

fn buf<'a>(be: &CpuBackend<'a>, v: &[f32]) -> CpuBuffer<'a, f32> {
    let mut b = be.alloc(v.len()).unwrap();
    be.upload(&mut b, 0, v).unwrap();
    b
}

fn wide(v: &[f32]) -> ReferenceBuffer<f64> {
    ReferenceBuffer::from_vec(v.iter().map(|&x| x as f64).collect())
}

fn assert_close(got: &[f32], want: &[f64], rel: f64, abs: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g as f64 - w).abs() <= abs + rel * w.abs() || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}[{i}]: got {g}, want {w}");
    }
}

// ---- memory ------------------------------------------------------------------------------------

#[test]
fn arena_hands_out_zeroed_slices_in_order_and_reports_oom() {
    let mut elems = vec![f32::NAN; 100];
    let mut idx = vec![7u32; 10];
    let be = CpuBackend::from_arena(&mut elems, &mut idx);
    assert!(!be.is_heap());
    assert_eq!((be.arena_capacity(), be.arena_remaining()), (100, 100));
    let a = be.alloc(30).unwrap();
    let mut b = be.alloc(70).unwrap();
    assert!(a.iter().chain(b.iter()).all(|&v| v == 0.0));
    assert!(a.is_arena());
    assert_eq!((be.arena_used(), be.arena_remaining()), (100, 0));
    assert_eq!(
        be.alloc(1).unwrap_err(),
        Error::OutOfMemory {
            what: "alloc",
            requested: 1,
            available: 0
        }
    );
    // A failed allocation takes nothing.
    let i = be.alloc_index(4).unwrap();
    assert!(i.iter().all(|&v| v == 0));
    assert!(be.alloc_index(7).is_err());
    assert_eq!(be.index_arena_used(), 4);
    assert_eq!(be.alloc(0).unwrap().len(), 0);
    be.upload(&mut b, 68, &[1.0, 2.0]).unwrap();
    assert!(be.upload(&mut b, 69, &[1.0, 2.0]).is_err());
    assert!(be.upload(&mut b, usize::MAX, &[1.0]).is_err());
    let mut out = [0.0; 2];
    be.download(&b, 68, &mut out).unwrap();
    assert_eq!(out, [1.0, 2.0]);
}

#[test]
fn heap_backend_and_thread_counts() {
    let be = CpuBackend::new();
    assert!(be.is_heap() && be.threads() >= 1);
    assert!(CpuBackend::with_threads(0).is_err());
    let be3 = CpuBackend::with_threads(3).unwrap();
    assert_eq!(be3.device_name(), "cpu (3 threads)");
    assert_eq!(
        CpuBackend::with_threads(1).unwrap().device_name(),
        "cpu (1 thread)"
    );
    assert!(!be3.alloc(5).unwrap().is_arena());
}

#[test]
fn first_fault_wins_and_take_clears() {
    let be = CpuBackend::new();
    let x = buf(&be, &[0.0, 0.0, 1.0, f32::NAN]);
    let mut y = be.alloc(4).unwrap();
    let mut n = be.alloc(2).unwrap();
    be.l2_normalize_forward(&x, &mut y, &mut n, 2, 2).unwrap();
    let desc = RowsDesc::new(1, 2);
    let mut out = be.alloc(1).unwrap();
    let xn = buf(&be, &[f32::NAN, 0.0]);
    be.row_logsumexp(&desc, &xn, &mut out).unwrap();
    let f = be.take_fault().unwrap().unwrap();
    assert_eq!((f.kind, f.index), (FaultKind::ZeroNormRow, 0));
    assert_eq!(be.take_fault().unwrap(), None);
    be.row_logsumexp(&desc, &xn, &mut out).unwrap();
    assert_eq!(
        be.take_fault().unwrap().map(|f| f.kind),
        Some(FaultKind::NonFinite)
    );
}

// ---- thread-count invariance -------------------------------------------------------------------

/// Runs `f` on backends with 1, 2 and 3 threads and checks that the outputs agree.
fn same_for_all_threads(rel: f32, f: impl Fn(&CpuBackend<'static>) -> Vec<f32>) {
    let base = f(&CpuBackend::with_threads(1).unwrap());
    for t in [2, 3] {
        let got = f(&CpuBackend::with_threads(t).unwrap());
        for (i, (a, b)) in base.iter().zip(&got).enumerate() {
            assert!(
                (a - b).abs() <= rel * (1.0 + a.abs()) || (a.is_nan() && b.is_nan()),
                "{t} threads, element {i}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn row_kernels_do_not_depend_on_threads() {
    let (rows, cols) = (37, 3001);
    let x = rand_vec(rows * cols, 1, 20.0);
    let t = rand_vec(rows * cols, 2, 1.0);
    let labels: Vec<u32> = (0..rows as u32).map(|r| r * 7 % 2999).collect();
    same_for_all_threads(0.0, |be| {
        let desc = RowsDesc {
            rows,
            cols,
            valid_cols: cols - 2,
        };
        let xb = buf(be, &x);
        let mut out = Vec::new();
        let mut y = be.alloc(rows * cols).unwrap();
        be.row_softmax(&desc, &xb, &mut y).unwrap();
        out.extend_from_slice(&y);
        let mut l = be.alloc(rows).unwrap();
        be.row_logsumexp(&desc, &xb, &mut l).unwrap();
        out.extend_from_slice(&l);
        let mut g = buf(be, &x);
        be.soft_cross_entropy(&desc, 0.5, &mut g, &buf(be, &t), &mut l)
            .unwrap();
        out.extend_from_slice(&g);
        out.extend_from_slice(&l);
        let mut g = buf(be, &x);
        let mut lab = be.alloc_index(rows).unwrap();
        be.upload_index(&mut lab, 0, &labels).unwrap();
        be.softmax_cross_entropy(&desc, 0.5, &mut g, &lab, &mut l)
            .unwrap();
        out.extend_from_slice(&g);
        out.extend_from_slice(&l);
        let mut n = be.alloc(rows).unwrap();
        be.l2_normalize_forward(&xb, &mut y, &mut n, rows, cols)
            .unwrap();
        out.extend_from_slice(&y);
        out.extend_from_slice(&n);
        out
    });
}

#[test]
fn dense_and_conv_kernels_barely_depend_on_threads() {
    let shape = Conv2dShape {
        batch: 5,
        in_channels: 3,
        in_height: 9,
        in_width: 8,
        out_channels: 4,
        kernel_h: 3,
        kernel_w: 3,
        stride: 2,
        padding: 1,
    };
    let x = rand_vec(shape.input_len(), 3, 1.0);
    let w = rand_vec(shape.weight_len(), 4, 1.0);
    let gy = rand_vec(shape.output_len(), 5, 1.0);
    same_for_all_threads(1e-5, |be| {
        let mut ws = be.alloc(be.conv2d_workspace_len(&shape)).unwrap();
        let (xb, wb, gyb) = (buf(be, &x), buf(be, &w), buf(be, &gy));
        let mut y = be.alloc(shape.output_len()).unwrap();
        be.conv2d_forward(&shape, &xb, &wb, &mut y, &mut ws)
            .unwrap();
        let mut gx = be.alloc(shape.input_len()).unwrap();
        be.conv2d_backward_data(&shape, &gyb, &wb, &mut gx, &mut ws)
            .unwrap();
        let mut gw = buf(be, &w);
        be.conv2d_backward_filter(&shape, &xb, &gyb, &mut gw, &mut ws)
            .unwrap();
        let mut s = be.alloc(1).unwrap();
        be.sum(&gyb, gy.len(), 0.25, &mut s, 0).unwrap();
        let mut gb = be.alloc(4).unwrap();
        be.bias_backward(&gyb, &mut gb, gy.len() / 4, 4).unwrap();
        [&y[..], &gx, &gw, &s, &gb].concat()
    });
}

// ---- the loss rows at full width against the oracle --------------------------------------------

#[test]
fn contrastive_rows_at_paper_width_match_the_f64_oracle() {
    // B = 8 anchors of a batch of 8, K = 65536 queue entries: N = 65552 columns, 3 masked.
    let (b, k) = (8usize, 65536usize);
    let n = 2 * b + k;
    let valid = n - 3;
    let logits = rand_vec(b * n, 11, 1.0 / 0.07);
    let labels: Vec<u32> = (0..n)
        .map(|j| {
            if j < 2 * b {
                (j % b) as u32 % 5
            } else {
                (j as u32 * 7919) % 1000
            }
        })
        .collect();
    for weighting in [
        PositiveWeighting::SupCon,
        PositiveWeighting::Decoupled { beta: 8.0 },
    ] {
        let desc = ContrastiveRowsDesc {
            rows: b,
            row_offset: 0,
            batch: b,
            cols: n,
            valid_cols: valid,
            num_classes: 1000,
            weighting,
            grad_scale: 1.0 / b as f64,
        };
        let be = CpuBackend::new();
        let mut lg = buf(&be, &logits);
        let mut lab = be.alloc_index(n).unwrap();
        be.upload_index(&mut lab, 0, &labels).unwrap();
        let mut loss = be.alloc(b).unwrap();
        be.contrastive_rows(&desc, &mut lg, &lab, &mut loss)
            .unwrap();
        assert_eq!(be.take_fault().unwrap(), None);

        let rb = ReferenceBackend::<f64>::new();
        let mut rlg = wide(&logits);
        let rlab = ReferenceIndexBuffer::from_vec(labels.clone());
        let mut rloss = ReferenceBuffer::from_vec(vec![0.0f64; b]);
        rb.contrastive_rows(&desc, &mut rlg, &rlab, &mut rloss)
            .unwrap();
        assert_close(&loss, rloss.as_slice(), 1e-6, 0.0, "loss");
        // Gradients: p_ij (about 1e-5 here) to 1e-5 relative, plus the positives' w/W terms.
        assert_close(&lg, rlg.as_slice(), 1e-5, 1e-12, "gradient");
    }
}

#[test]
fn soft_cross_entropy_at_paper_width_matches_the_f64_oracle() {
    let (rows, cols) = (4usize, 65537usize);
    let x = rand_vec(rows * cols, 21, 1.0 / 0.07);
    // Targets: a softmax (as PBSD's teacher), computed by the oracle.
    let rb = ReferenceBackend::<f64>::new();
    let desc = RowsDesc::new(rows, cols);
    let mut t = ReferenceBuffer::from_vec(vec![0.0f64; rows * cols]);
    rb.row_softmax(&desc, &wide(&rand_vec(rows * cols, 22, 14.0)), &mut t)
        .unwrap();
    let t32: Vec<f32> = t.as_slice().iter().map(|&v| v as f32).collect();
    let be = CpuBackend::new();
    let mut lg = buf(&be, &x);
    let mut loss = be.alloc(rows).unwrap();
    be.soft_cross_entropy(&desc, 0.25, &mut lg, &buf(&be, &t32), &mut loss)
        .unwrap();
    let mut rlg = wide(&x);
    let mut rloss = ReferenceBuffer::from_vec(vec![0.0f64; rows]);
    rb.soft_cross_entropy(&desc, 0.25, &mut rlg, &wide(&t32), &mut rloss)
        .unwrap();
    assert_close(&loss, rloss.as_slice(), 1e-6, 0.0, "loss");
    // q * sum(t) - t cancels: the error is relative to the terms (about 1e-4 here).
    assert_close(&lg, rlg.as_slice(), 1e-5, 1e-10, "gradient");
    let mut out = be.alloc(rows).unwrap();
    let xb = buf(&be, &x);
    be.row_logsumexp(&desc, &xb, &mut out).unwrap();
    let mut rout = ReferenceBuffer::from_vec(vec![0.0f64; rows]);
    rb.row_logsumexp(&desc, &wide(&x), &mut rout).unwrap();
    assert_close(&out, rout.as_slice(), 1e-7, 0.0, "logsumexp");
}

// ---- convolution workspaces -------------------------------------------------------------------

#[test]
fn conv_matches_the_oracle_and_demands_its_workspace() {
    let shape = Conv2dShape {
        batch: 4,
        in_channels: 2,
        in_height: 7,
        in_width: 6,
        out_channels: 3,
        kernel_h: 3,
        kernel_w: 2,
        stride: 1,
        padding: 1,
    };
    let x = rand_vec(shape.input_len(), 31, 1.0);
    let w = rand_vec(shape.weight_len(), 32, 1.0);
    let gy = rand_vec(shape.output_len(), 33, 1.0);
    let rb = ReferenceBackend::<f64>::new();
    let mut ry = ReferenceBuffer::from_vec(vec![0.0; shape.output_len()]);
    let mut rgx = ReferenceBuffer::from_vec(vec![0.0; shape.input_len()]);
    let mut rgw = wide(&w);
    let mut rws = ReferenceBuffer::from_vec(vec![0.0; rb.conv2d_workspace_len(&shape)]);
    rb.conv2d_forward(&shape, &wide(&x), &wide(&w), &mut ry, &mut rws)
        .unwrap();
    rb.conv2d_backward_data(&shape, &wide(&gy), &wide(&w), &mut rgx, &mut rws)
        .unwrap();
    rb.conv2d_backward_filter(&shape, &wide(&x), &wide(&gy), &mut rgw, &mut rws)
        .unwrap();

    // 3 threads: 2 groups of 2 images, each in one block of 2 (7x7 = 49 pixels per image);
    // 1 thread: blocks of 2 images (forward, backward-data) and of 3 then 1 (backward-filter).
    for (threads, groups) in [(3, 2), (1, 1)] {
        let be = CpuBackend::with_threads(threads).unwrap();
        let full = be.conv2d_workspace_len(&shape);
        let per_group = 2 * 3 * 2 * (2 * 49) + 3 * (2 * 49) + shape.weight_len();
        let per_group = if threads == 1 {
            per_group + (2 * 3 * 2 + 3) * 49
        } else {
            per_group
        };
        assert_eq!(full, groups * per_group);
        for ws_len in [full, full + 5] {
            let mut ws = be.alloc(ws_len).unwrap();
            let (xb, wb, gyb) = (buf(&be, &x), buf(&be, &w), buf(&be, &gy));
            let mut y = be.alloc(shape.output_len()).unwrap();
            be.conv2d_forward(&shape, &xb, &wb, &mut y, &mut ws)
                .unwrap();
            assert_close(&y, ry.as_slice(), 1e-5, 1e-5, "forward");
            let mut gx = be.alloc(shape.input_len()).unwrap();
            be.conv2d_backward_data(&shape, &gyb, &wb, &mut gx, &mut ws)
                .unwrap();
            assert_close(&gx, rgx.as_slice(), 1e-5, 1e-5, "backward data");
            let mut gw = buf(&be, &w);
            be.conv2d_backward_filter(&shape, &xb, &gyb, &mut gw, &mut ws)
                .unwrap();
            assert_close(&gw, rgw.as_slice(), 1e-5, 1e-5, "backward filter");
        }
        let mut small = be.alloc(full - 1).unwrap();
        let mut y = be.alloc(shape.output_len()).unwrap();
        assert!(matches!(
            be.conv2d_forward(&shape, &buf(&be, &x), &buf(&be, &w), &mut y, &mut small),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}

#[test]
fn pointwise_conv_uses_the_input_as_columns() {
    let shape = Conv2dShape {
        batch: 2,
        in_channels: 5,
        in_height: 16,
        in_width: 8,
        out_channels: 6,
        kernel_h: 1,
        kernel_w: 1,
        stride: 1,
        padding: 0,
    };
    let be = CpuBackend::with_threads(1).unwrap();
    // Only backward-filter's partial gradient: with 128 pixels an image is a block on its own,
    // and the input is its own column matrix.
    assert_eq!(be.conv2d_workspace_len(&shape), shape.weight_len());
    let x = rand_vec(shape.input_len(), 41, 1.0);
    let w = rand_vec(shape.weight_len(), 42, 1.0);
    let mut ws = be.alloc(shape.weight_len()).unwrap();
    let mut y = be.alloc(shape.output_len()).unwrap();
    be.conv2d_forward(&shape, &buf(&be, &x), &buf(&be, &w), &mut y, &mut ws)
        .unwrap();
    // y[n][o][p] = sum_c w[o][c] x[n][c][p]
    for n in 0..2 {
        for o in 0..6 {
            for p in 0..128 {
                let want: f32 = (0..5)
                    .map(|c| w[o * 5 + c] * x[(n * 5 + c) * 128 + p])
                    .sum();
                assert!((y[(n * 6 + o) * 128 + p] - want).abs() < 1e-5);
            }
        }
    }
}

// ---- gemm through the trait ------------------------------------------------------------------

#[test]
fn batched_gemm_in_parallel_matches_serial() {
    let (m, n, k, batch) = (5, 7, 3, 6);
    let d = GemmDesc {
        m,
        n,
        k,
        trans_a: true,
        trans_b: false,
        alpha: 1.5,
        beta: 0.0,
        batch,
        a: MatrixLayout::strided(1, m, k * m),
        b: MatrixLayout::strided(0, n + 1, k * (n + 1)),
        c: MatrixLayout::strided(2, n, m * n + 3),
    };
    let a = rand_vec(1 + batch * k * m, 51, 1.0);
    let b = rand_vec(batch * k * (n + 1), 52, 1.0);
    same_for_all_threads(1e-6, |be| {
        let mut c = buf(be, &vec![f32::NAN; 2 + batch * (m * n + 3)]);
        be.gemm(&d, &buf(be, &a), &buf(be, &b), &mut c).unwrap();
        // The gaps between C matrices are untouched.
        assert!(c[0].is_nan() && c[1].is_nan() && c[2 + m * n].is_nan());
        c.iter().filter(|v| !v.is_nan()).cloned().collect()
    });
}

#[test]
fn norm_pool_roi_and_updates_do_not_depend_on_threads() {
    // Large enough that every kernel splits its work (ELEMENT_GRAIN is 32768 elements).
    let bn = BatchNormShape {
        batch: 6,
        channels: 70, // more than one block of channel statistics
        spatial: 97,
        eps: 1e-5,
        momentum: 0.1,
        groups: 1,
        running_every: 1,
    };
    let x = rand_vec(bn.len(), 61, 3.0);
    let dy = rand_vec(bn.len(), 62, 1.0);
    let gamma = rand_vec(70, 63, 1.0);
    let pool = PoolShape {
        batch: 6,
        channels: 70,
        in_height: 11,
        in_width: 9,
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    let roi = RoiAlignShape {
        batch: 3,
        channels: 70,
        height: 7,
        width: 9,
        num_rois: 11,
        pooled_h: 2,
        pooled_w: 2,
        spatial_scale: 1.0 / 4.0,
        sampling_ratio: 0,
        aligned: false,
    };
    let boxes: Vec<f32> = (0..11)
        .flat_map(|r| {
            let f = r as f32;
            [f % 3.0, 2.0 * f, f, 9.0 + 3.0 * f, 6.0 + 2.0 * f]
        })
        .collect();
    same_for_all_threads(1e-6, |be| {
        let (xb, dyb, gb) = (buf(be, &x), buf(be, &dy), buf(be, &gamma));
        let mut y = be.alloc(bn.len()).unwrap();
        let mut stats: Vec<CpuBuffer<'_, f32>> = (0..4).map(|_| be.alloc(70).unwrap()).collect();
        let [m, s, rm, rv] = &mut stats[..] else {
            unreachable!()
        };
        be.batch_norm_forward_train(
            &bn,
            BnTrain {
                x: &xb,
                gamma: &gb,
                beta: &gb,
                y: &mut y,
                save_mean: m,
                save_invstd: s,
                running_mean: rm,
                running_var: rv,
            },
        )
        .unwrap();
        let mut out = [&y[..], m, s, rm, rv].concat();
        let (mut gx, mut gg, mut gbeta) = (
            be.alloc(bn.len()).unwrap(),
            be.alloc(70).unwrap(),
            be.alloc(70).unwrap(),
        );
        be.batch_norm_backward(
            &bn,
            BnBackward {
                x: &xb,
                grad_y: &dyb,
                gamma: &gb,
                save_mean: m,
                save_invstd: s,
                grad_x: &mut gx,
                grad_gamma: &mut gg,
                grad_beta: &mut gbeta,
            },
        )
        .unwrap();
        be.batch_norm_forward_inference(
            &bn,
            BnInference {
                x: &xb,
                gamma: &gb,
                beta: &gb,
                running_mean: rm,
                running_var: rv,
                y: &mut y,
            },
        )
        .unwrap();
        out.extend([&gx[..], &gg, &gbeta, &y].concat());

        let px = buf(be, &rand_vec(pool.input_len(), 64, 1.0));
        let mut py = be.alloc(pool.output_len()).unwrap();
        let mut am = be.alloc_index(pool.output_len()).unwrap();
        be.max_pool2d_forward(&pool, &px, &mut py, &mut am).unwrap();
        let mut pgx = be.alloc(pool.input_len()).unwrap();
        be.max_pool2d_backward(&pool, &py, &am, &mut pgx).unwrap();
        out.extend([&py[..], &pgx].concat());
        out.extend(am.iter().map(|&a| a as f32));

        let feats = buf(be, &x[..roi.features_len()]);
        let bx = buf(be, &boxes);
        let mut ro = be.alloc(roi.output_len()).unwrap();
        be.roi_align_forward(&roi, &feats, &bx, &mut ro).unwrap();
        let mut rg = buf(be, &x[..roi.features_len()]);
        be.roi_align_backward(&roi, &ro, &bx, &mut rg).unwrap();
        out.extend([&ro[..], &rg].concat());

        let len = bn.len();
        let mut w = buf(be, &x);
        let mut v = buf(be, &dy);
        let p = SgdParams {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            dampening: 0.0,
            nesterov: true,
            first_step: false,
        };
        be.sgd_momentum_update(&p, &mut w, &dyb, &mut v, len)
            .unwrap();
        be.ema_update(0.999, &dyb, &mut w, len).unwrap();
        let mut r = be.alloc(len).unwrap();
        be.relu_forward(&w, &mut r, len).unwrap();
        be.axpy(-0.5, &v, &mut r, len).unwrap();
        out.extend([&w[..], &v, &r].concat());
        assert_eq!(be.take_fault().unwrap(), None);
        out
    });
}

#[test]
fn wide_max_pool_matches_the_oracle_with_ties_and_nans() {
    // Rows wide enough for the 16-lane interior path, small integers (many ties) and NaNs.
    for (k, s, p) in [(3, 2, 1), (3, 1, 1), (2, 2, 0), (3, 3, 0)] {
        let shape = PoolShape {
            batch: 2,
            channels: 3,
            in_height: 7,
            in_width: 75,
            kernel: k,
            stride: s,
            padding: p,
        };
        let len = 2 * 3 * 7 * 75;
        let mut x: Vec<f32> = rand_vec(len, 77, 1.0)
            .iter()
            .map(|v| (v * 2.0).round())
            .collect();
        for at in [300, 301, 1000, 2500, 2503] {
            x[at] = f32::NAN;
        }
        let out = 2 * 3 * shape.out_height() * shape.out_width();
        let be = CpuBackend::with_threads(2).unwrap();
        let mut y = be.alloc(out).unwrap();
        let mut am = be.alloc_index(out).unwrap();
        be.max_pool2d_forward(&shape, &buf(&be, &x), &mut y, &mut am)
            .unwrap();
        let rb = ReferenceBackend::<f64>::new();
        let mut ry = ReferenceBuffer::from_vec(vec![0.0; out]);
        let mut ram = ReferenceIndexBuffer::from_vec(vec![0; out]);
        rb.max_pool2d_forward(&shape, &wide(&x), &mut ry, &mut ram)
            .unwrap();
        for o in 0..out {
            let (g, w) = (y[o] as f64, ry.as_slice()[o]);
            assert!(
                g == w || (g.is_nan() && w.is_nan()),
                "{k}/{s}/{p} y[{o}]: {g} vs {w}"
            );
        }
        assert_eq!(&am[..], ram.as_slice(), "{k}/{s}/{p} argmax");
        assert_eq!(be.take_fault().unwrap(), rb.take_fault().unwrap());
    }
}

#[test]
fn large_maps_in_row_chunks_match_the_oracle() {
    // Column matrices over 2^18 elements per image are built in chunks of output rows.
    let shapes = [(2, 8, 64, 64, 4, 3, 1, 1), (1, 3, 130, 128, 5, 7, 2, 3)];
    for (batch, c, h, w, o, k, stride, padding) in shapes {
        let shape = Conv2dShape {
            batch,
            in_channels: c,
            in_height: h,
            in_width: w,
            out_channels: o,
            kernel_h: k,
            kernel_w: k,
            stride,
            padding,
        };
        let x = rand_vec(shape.input_len(), 51, 1.0);
        let wt = rand_vec(shape.weight_len(), 52, 1.0);
        let gy = rand_vec(shape.output_len(), 53, 1.0);
        let rb = ReferenceBackend::<f64>::new();
        let mut ry = ReferenceBuffer::from_vec(vec![0.0; shape.output_len()]);
        let mut rgx = ReferenceBuffer::from_vec(vec![0.0; shape.input_len()]);
        let mut rgw = wide(&wt);
        let mut rws = ReferenceBuffer::from_vec(vec![0.0; rb.conv2d_workspace_len(&shape)]);
        rb.conv2d_forward(&shape, &wide(&x), &wide(&wt), &mut ry, &mut rws)
            .unwrap();
        rb.conv2d_backward_data(&shape, &wide(&gy), &wide(&wt), &mut rgx, &mut rws)
            .unwrap();
        rb.conv2d_backward_filter(&shape, &wide(&x), &wide(&gy), &mut rgw, &mut rws)
            .unwrap();
        for threads in [1, 2] {
            let be = CpuBackend::with_threads(threads).unwrap();
            let mut ws = be.alloc(be.conv2d_workspace_len(&shape)).unwrap();
            let (xb, wb, gyb) = (buf(&be, &x), buf(&be, &wt), buf(&be, &gy));
            let mut y = be.alloc(shape.output_len()).unwrap();
            be.conv2d_forward(&shape, &xb, &wb, &mut y, &mut ws)
                .unwrap();
            assert_close(&y, ry.as_slice(), 1e-4, 1e-4, "forward");
            let mut gx = be.alloc(shape.input_len()).unwrap();
            be.conv2d_backward_data(&shape, &gyb, &wb, &mut gx, &mut ws)
                .unwrap();
            assert_close(&gx, rgx.as_slice(), 1e-4, 1e-4, "backward data");
            let mut gw = buf(&be, &wt);
            be.conv2d_backward_filter(&shape, &xb, &gyb, &mut gw, &mut ws)
                .unwrap();
            assert_close(&gw, rgw.as_slice(), 1e-4, 1e-3, "backward filter");
        }
    }
}
