//! Shape errors: for every method, each buffer argument one element too short returns
//! `Err(ShapeMismatch)` without panicking; a sample of out-of-range arguments returns
//! `Err(InvalidArgument)`. Neither records a fault.

use crate::harness::{fail, Config, Ctx, Factory, FamilyReport, OrFail, Res};
use dscl_core::desc::{
    BatchNormShape, ContrastiveRowsDesc, Conv2dShape, GemmDesc, PoolShape, PositiveWeighting,
    RoiAlignShape, RowsDesc, SgdParams,
};
use dscl_core::{Backend, Error};
use proptest::prelude::*;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

#[derive(Clone, Copy, Debug)]
enum Want {
    Shape,
    Invalid,
}

fn expect<T>(what: &str, want: Want, call: impl FnOnce() -> dscl_core::Result<T>) -> Res<()> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            fail(format!(
                "{what}: PANICKED ({msg}) instead of returning Err({want:?})"
            ))
        }
        Ok(Ok(_)) => fail(format!("{what}: returned Ok, expected Err({want:?})")),
        Ok(Err(e)) => match (want, e) {
            (Want::Shape, Error::ShapeMismatch { .. }) => Ok(()),
            (Want::Invalid, Error::InvalidArgument { .. }) => Ok(()),
            _ => fail(format!("{what}: returned Err({e:?}), expected {want:?}")),
        },
    }
}

#[derive(Clone, Debug)]
struct Case {
    trans_a: bool,
    trans_b: bool,
}

pub(crate) fn run<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    let strategy =
        (any::<bool>(), any::<bool>()).prop_map(|(trans_a, trans_b)| Case { trans_a, trans_b });
    // Four cases cover the transpose combinations of gemm; the rest is deterministic.
    let cfg = cfg.clone().with_cases_factor(1.0);
    case_fn!(Runner, Case, run_case);
    crate::harness::run_family("shape_errors", &cfg, make, 4, strategy, Runner)
}

#[allow(clippy::too_many_lines)]
fn run_case<B: Backend>(ctx: &Ctx<'_, B>, case: &Case) -> Res<()> {
    use Want::{Invalid, Shape};
    let be = &ctx.be;
    let z = |n: usize| be.alloc(n).or_fail("alloc");
    let zi = |n: usize| be.alloc_index(n).or_fail("alloc_index");
    let e = |n: usize| vec![ctx_zero::<B>(); n];

    // ---- memory ----
    let mut d4 = z(4)?;
    expect("upload past the end", Shape, || {
        be.upload(&mut d4, 2, &e(3))
    })?;
    expect("download past the end", Shape, || {
        be.download(&d4, 2, &mut e(3))
    })?;
    let mut i4 = zi(4)?;
    expect("upload_index past the end", Shape, || {
        be.upload_index(&mut i4, 2, &[1, 2, 3])
    })?;
    expect("download_index past the end", Shape, || {
        be.download_index(&i4, 2, &mut [0; 3])
    })?;

    // ---- elementwise ----
    let (x3, x4) = (z(3)?, z(4)?);
    let (mut y3, mut y4) = (z(3)?, z(4)?);
    expect("fill past the end", Shape, || be.fill(&mut y4, 2, 3, 1.0))?;
    expect("copy: src too short", Shape, || {
        be.copy(&x4, 2, &mut y4, 0, 3)
    })?;
    expect("copy: dst too short", Shape, || {
        be.copy(&x4, 0, &mut y4, 2, 3)
    })?;
    let (ii4, mut io4) = (zi(4)?, zi(4)?);
    expect("copy_index: src too short", Shape, || {
        be.copy_index(&ii4, 2, &mut io4, 0, 3)
    })?;
    expect("copy_index: dst too short", Shape, || {
        be.copy_index(&ii4, 0, &mut io4, 2, 3)
    })?;
    expect("scale: x too short", Shape, || be.scale(&mut y3, 4, 2.0))?;
    expect("axpy: x too short", Shape, || be.axpy(1.0, &x3, &mut y4, 4))?;
    expect("axpy: y too short", Shape, || be.axpy(1.0, &x4, &mut y3, 4))?;
    expect("add: a too short", Shape, || be.add(&x3, &x4, &mut y4, 4))?;
    expect("add: b too short", Shape, || be.add(&x4, &x3, &mut y4, 4))?;
    expect("add: out too short", Shape, || be.add(&x4, &x4, &mut y3, 4))?;
    expect("sum: x too short", Shape, || {
        be.sum(&x3, 4, 1.0, &mut y4, 0)
    })?;
    expect("sum: out offset past the end", Shape, || {
        be.sum(&x4, 4, 1.0, &mut y3, 3)
    })?;

    // ---- gemm ----
    let gd = GemmDesc::new(3, 4, 5, case.trans_a, case.trans_b);
    let (a, a_s) = (z(15)?, z(14)?);
    let (b, b_s) = (z(20)?, z(19)?);
    let (mut c, mut c_s) = (z(12)?, z(11)?);
    expect("gemm: A too short", Shape, || {
        be.gemm(&gd, &a_s, &b, &mut c)
    })?;
    expect("gemm: B too short", Shape, || {
        be.gemm(&gd, &a, &b_s, &mut c)
    })?;
    expect("gemm: C too short", Shape, || {
        be.gemm(&gd, &a, &b, &mut c_s)
    })?;
    let mut batched = gd;
    batched.batch = 2;
    batched.a.batch_stride = 15;
    batched.b.batch_stride = 20;
    batched.c.batch_stride = 12;
    expect("gemm: batch 2 over single matrices", Shape, || {
        be.gemm(&batched, &a, &b, &mut c)
    })?;
    let mut bad_ld = gd;
    bad_ld.a.ld = 1;
    expect("gemm: A leading dimension too small", Invalid, || {
        be.gemm(&bad_ld, &a, &b, &mut c)
    })?;
    let nan_alpha = gd.alpha(f64::NAN);
    expect("gemm: NaN alpha", Invalid, || {
        be.gemm(&nan_alpha, &a, &b, &mut c)
    })?;

    // ---- bias ----
    let (x12, x11) = (z(12)?, z(11)?);
    let (mut m12, mut m11) = (z(12)?, z(11)?);
    let (mut b4, mut b3) = (z(4)?, z(3)?);
    expect("bias_add: x too short", Shape, || {
        be.bias_add(&mut m11, &b4, 3, 4)
    })?;
    expect("bias_add: bias too short", Shape, || {
        be.bias_add(&mut m12, &b3, 3, 4)
    })?;
    expect("bias_backward: grad_out too short", Shape, || {
        be.bias_backward(&x11, &mut b4, 3, 4)
    })?;
    expect("bias_backward: grad_bias too short", Shape, || {
        be.bias_backward(&x12, &mut b3, 3, 4)
    })?;

    // ---- conv2d: 1x2x5x5 input, 3 filters 3x3, stride 1, padding 1 -> 1x3x5x5 ----
    let cs = Conv2dShape {
        batch: 1,
        in_channels: 2,
        in_height: 5,
        in_width: 5,
        out_channels: 3,
        kernel_h: 3,
        kernel_w: 3,
        stride: 1,
        padding: 1,
    };
    let (il, wl, ol) = (cs.input_len(), cs.weight_len(), cs.output_len());
    let wsl = be.conv2d_workspace_len(&cs);
    let (inp, inp_s) = (z(il)?, z(il - 1)?);
    let (w, w_s) = (z(wl)?, z(wl - 1)?);
    let (out, out_s) = (z(ol)?, z(ol - 1)?);
    let (mut minp, mut minp_s) = (z(il)?, z(il - 1)?);
    let (mut mw, mut mw_s) = (z(wl)?, z(wl - 1)?);
    let (mut mout, mut mout_s) = (z(ol)?, z(ol - 1)?);
    let mut ws = z(wsl)?;
    expect("conv2d_forward: input too short", Shape, || {
        be.conv2d_forward(&cs, &inp_s, &w, &mut mout, &mut ws)
    })?;
    expect("conv2d_forward: weight too short", Shape, || {
        be.conv2d_forward(&cs, &inp, &w_s, &mut mout, &mut ws)
    })?;
    expect("conv2d_forward: output too short", Shape, || {
        be.conv2d_forward(&cs, &inp, &w, &mut mout_s, &mut ws)
    })?;
    expect("conv2d_backward_data: grad_output too short", Shape, || {
        be.conv2d_backward_data(&cs, &out_s, &w, &mut minp, &mut ws)
    })?;
    expect("conv2d_backward_data: weight too short", Shape, || {
        be.conv2d_backward_data(&cs, &out, &w_s, &mut minp, &mut ws)
    })?;
    expect("conv2d_backward_data: grad_input too short", Shape, || {
        be.conv2d_backward_data(&cs, &out, &w, &mut minp_s, &mut ws)
    })?;
    expect("conv2d_backward_filter: input too short", Shape, || {
        be.conv2d_backward_filter(&cs, &inp_s, &out, &mut mw, &mut ws)
    })?;
    expect(
        "conv2d_backward_filter: grad_output too short",
        Shape,
        || be.conv2d_backward_filter(&cs, &inp, &out_s, &mut mw, &mut ws),
    )?;
    expect(
        "conv2d_backward_filter: grad_weight too short",
        Shape,
        || be.conv2d_backward_filter(&cs, &inp, &out, &mut mw_s, &mut ws),
    )?;
    if wsl > 0 {
        let mut ws_s = z(wsl - 1)?;
        expect("conv2d_forward: workspace too short", Shape, || {
            be.conv2d_forward(&cs, &inp, &w, &mut mout, &mut ws_s)
        })?;
        expect("conv2d_backward_data: workspace too short", Shape, || {
            be.conv2d_backward_data(&cs, &out, &w, &mut minp, &mut ws_s)
        })?;
        expect("conv2d_backward_filter: workspace too short", Shape, || {
            be.conv2d_backward_filter(&cs, &inp, &out, &mut mw, &mut ws_s)
        })?;
    }
    let zero_stride = Conv2dShape { stride: 0, ..cs };
    expect("conv2d_forward: stride 0", Invalid, || {
        be.conv2d_forward(&zero_stride, &inp, &w, &mut mout, &mut ws)
    })?;
    let big_pad = Conv2dShape { padding: 3, ..cs };
    let mut big = z(4 * ol)?;
    let mut big_ws = z(be.conv2d_workspace_len(&big_pad).max(wsl))?;
    expect("conv2d_forward: padding >= kernel", Invalid, || {
        be.conv2d_forward(&big_pad, &inp, &w, &mut big, &mut big_ws)
    })?;

    // ---- batch norm: 2 x 3 x 4 ----
    let bs = BatchNormShape {
        batch: 2,
        channels: 3,
        spatial: 4,
        eps: 1e-5,
        momentum: 0.1,
        groups: 1,
        running_every: 1,
    };
    let (bx, bx_s) = (z(24)?, z(23)?);
    let (bc, bc_s) = (z(3)?, z(2)?);
    let (mut my, mut my_s) = (z(24)?, z(23)?);
    let (mut c1, mut c2, mut c3, mut c4) = (z(3)?, z(3)?, z(3)?, z(3)?);
    let mut cs_s = z(2)?;
    macro_rules! train {
        ($what:expr, $x:expr, $g:expr, $b:expr, $y:expr, $sm:expr, $si:expr, $rm:expr, $rv:expr) => {
            expect($what, Shape, || {
                be.batch_norm_forward_train(&bs, $x, $g, $b, $y, $sm, $si, $rm, $rv)
            })?
        };
    }
    train!(
        "bn train: x too short",
        &bx_s,
        &bc,
        &bc,
        &mut my,
        &mut c1,
        &mut c2,
        &mut c3,
        &mut c4
    );
    train!(
        "bn train: gamma too short",
        &bx,
        &bc_s,
        &bc,
        &mut my,
        &mut c1,
        &mut c2,
        &mut c3,
        &mut c4
    );
    train!(
        "bn train: beta too short",
        &bx,
        &bc,
        &bc_s,
        &mut my,
        &mut c1,
        &mut c2,
        &mut c3,
        &mut c4
    );
    train!(
        "bn train: y too short",
        &bx,
        &bc,
        &bc,
        &mut my_s,
        &mut c1,
        &mut c2,
        &mut c3,
        &mut c4
    );
    train!(
        "bn train: save_mean too short",
        &bx,
        &bc,
        &bc,
        &mut my,
        &mut cs_s,
        &mut c2,
        &mut c3,
        &mut c4
    );
    train!(
        "bn train: save_invstd too short",
        &bx,
        &bc,
        &bc,
        &mut my,
        &mut c1,
        &mut cs_s,
        &mut c3,
        &mut c4
    );
    train!(
        "bn train: running_mean too short",
        &bx,
        &bc,
        &bc,
        &mut my,
        &mut c1,
        &mut c2,
        &mut cs_s,
        &mut c4
    );
    train!(
        "bn train: running_var too short",
        &bx,
        &bc,
        &bc,
        &mut my,
        &mut c1,
        &mut c2,
        &mut c3,
        &mut cs_s
    );
    let zero_eps = BatchNormShape { eps: 0.0, ..bs };
    expect("bn train: eps 0", Invalid, || {
        be.batch_norm_forward_train(
            &zero_eps, &bx, &bc, &bc, &mut my, &mut c1, &mut c2, &mut c3, &mut c4,
        )
    })?;
    macro_rules! infer {
        ($what:expr, $x:expr, $g:expr, $b:expr, $rm:expr, $rv:expr, $y:expr) => {
            expect($what, Shape, || {
                be.batch_norm_forward_inference(&bs, $x, $g, $b, $rm, $rv, $y)
            })?
        };
    }
    infer!(
        "bn inference: x too short",
        &bx_s,
        &bc,
        &bc,
        &bc,
        &bc,
        &mut my
    );
    infer!(
        "bn inference: gamma too short",
        &bx,
        &bc_s,
        &bc,
        &bc,
        &bc,
        &mut my
    );
    infer!(
        "bn inference: beta too short",
        &bx,
        &bc,
        &bc_s,
        &bc,
        &bc,
        &mut my
    );
    infer!(
        "bn inference: running_mean too short",
        &bx,
        &bc,
        &bc,
        &bc_s,
        &bc,
        &mut my
    );
    infer!(
        "bn inference: running_var too short",
        &bx,
        &bc,
        &bc,
        &bc,
        &bc_s,
        &mut my
    );
    infer!(
        "bn inference: y too short",
        &bx,
        &bc,
        &bc,
        &bc,
        &bc,
        &mut my_s
    );
    macro_rules! bnback {
        ($what:expr, $x:expr, $dy:expr, $g:expr, $sm:expr, $si:expr, $dx:expr, $dg:expr, $db:expr) => {
            expect($what, Shape, || {
                be.batch_norm_backward(&bs, $x, $dy, $g, $sm, $si, $dx, $dg, $db)
            })?
        };
    }
    bnback!(
        "bn backward: x too short",
        &bx_s,
        &bx,
        &bc,
        &bc,
        &bc,
        &mut my,
        &mut c1,
        &mut c2
    );
    bnback!(
        "bn backward: grad_y too short",
        &bx,
        &bx_s,
        &bc,
        &bc,
        &bc,
        &mut my,
        &mut c1,
        &mut c2
    );
    bnback!(
        "bn backward: gamma too short",
        &bx,
        &bx,
        &bc_s,
        &bc,
        &bc,
        &mut my,
        &mut c1,
        &mut c2
    );
    bnback!(
        "bn backward: save_mean too short",
        &bx,
        &bx,
        &bc,
        &bc_s,
        &bc,
        &mut my,
        &mut c1,
        &mut c2
    );
    bnback!(
        "bn backward: save_invstd too short",
        &bx,
        &bx,
        &bc,
        &bc,
        &bc_s,
        &mut my,
        &mut c1,
        &mut c2
    );
    bnback!(
        "bn backward: grad_x too short",
        &bx,
        &bx,
        &bc,
        &bc,
        &bc,
        &mut my_s,
        &mut c1,
        &mut c2
    );
    bnback!(
        "bn backward: grad_gamma too short",
        &bx,
        &bx,
        &bc,
        &bc,
        &bc,
        &mut my,
        &mut cs_s,
        &mut c2
    );
    bnback!(
        "bn backward: grad_beta too short",
        &bx,
        &bx,
        &bc,
        &bc,
        &bc,
        &mut my,
        &mut c1,
        &mut cs_s
    );

    // ---- relu ----
    expect("relu_forward: x too short", Shape, || {
        be.relu_forward(&x3, &mut y4, 4)
    })?;
    expect("relu_forward: y too short", Shape, || {
        be.relu_forward(&x4, &mut y3, 4)
    })?;
    expect("relu_backward: y too short", Shape, || {
        be.relu_backward(&x3, &x4, &mut y4, 4)
    })?;
    expect("relu_backward: grad_y too short", Shape, || {
        be.relu_backward(&x4, &x3, &mut y4, 4)
    })?;
    expect("relu_backward: grad_x too short", Shape, || {
        be.relu_backward(&x4, &x4, &mut y3, 4)
    })?;

    // ---- max pool: 1 x 2 x 4 x 4, 2x2/2 -> 1 x 2 x 2 x 2 ----
    let ps = PoolShape {
        batch: 1,
        channels: 2,
        in_height: 4,
        in_width: 4,
        kernel: 2,
        stride: 2,
        padding: 0,
    };
    let (px, px_s) = (z(32)?, z(31)?);
    let (py, py_s) = (z(8)?, z(7)?);
    let (mut mpx, mut mpx_s) = (z(32)?, z(31)?);
    let (mut mpy, mut mpy_s) = (z(8)?, z(7)?);
    let (pa, pa_s) = (zi(8)?, zi(7)?);
    let (mut mpa, mut mpa_s) = (zi(8)?, zi(7)?);
    expect("max_pool2d_forward: x too short", Shape, || {
        be.max_pool2d_forward(&ps, &px_s, &mut mpy, &mut mpa)
    })?;
    expect("max_pool2d_forward: y too short", Shape, || {
        be.max_pool2d_forward(&ps, &px, &mut mpy_s, &mut mpa)
    })?;
    expect("max_pool2d_forward: argmax too short", Shape, || {
        be.max_pool2d_forward(&ps, &px, &mut mpy, &mut mpa_s)
    })?;
    expect("max_pool2d_backward: grad_y too short", Shape, || {
        be.max_pool2d_backward(&ps, &py_s, &pa, &mut mpx)
    })?;
    expect("max_pool2d_backward: argmax too short", Shape, || {
        be.max_pool2d_backward(&ps, &py, &pa_s, &mut mpx)
    })?;
    expect("max_pool2d_backward: grad_x too short", Shape, || {
        be.max_pool2d_backward(&ps, &py, &pa, &mut mpx_s)
    })?;
    let bad_pad = PoolShape { padding: 2, ..ps };
    expect("max_pool2d_forward: padding > kernel / 2", Invalid, || {
        be.max_pool2d_forward(&bad_pad, &px, &mut mpy, &mut mpa)
    })?;

    // ---- global average pool: 2 x 2 x 8 ----
    expect("global_avg_pool_forward: x too short", Shape, || {
        be.global_avg_pool_forward(&px_s, &mut mpy, 2, 2, 8)
    })?;
    expect("global_avg_pool_forward: y too short", Shape, || {
        be.global_avg_pool_forward(&px, &mut b3, 2, 2, 1)
    })?;
    expect("global_avg_pool_backward: grad_y too short", Shape, || {
        be.global_avg_pool_backward(&x3, &mut mpx, 2, 2, 8)
    })?;
    expect("global_avg_pool_backward: grad_x too short", Shape, || {
        be.global_avg_pool_backward(&x4, &mut mpx_s, 2, 2, 8)
    })?;

    // ---- roi align: features 1 x 2 x 4 x 4, 2 boxes, 2x2 ----
    let rs = RoiAlignShape {
        batch: 1,
        channels: 2,
        height: 4,
        width: 4,
        num_rois: 2,
        pooled_h: 2,
        pooled_w: 2,
        spatial_scale: 0.25,
        sampling_ratio: 0,
        aligned: false,
    };
    let (rb, rb_s) = (z(10)?, z(9)?);
    let (mut ro, mut ro_s) = (z(16)?, z(15)?);
    expect("roi_align_forward: features too short", Shape, || {
        be.roi_align_forward(&rs, &px_s, &rb, &mut ro)
    })?;
    expect("roi_align_forward: boxes too short", Shape, || {
        be.roi_align_forward(&rs, &px, &rb_s, &mut ro)
    })?;
    expect("roi_align_forward: output too short", Shape, || {
        be.roi_align_forward(&rs, &px, &rb, &mut ro_s)
    })?;
    let ro_in = z(16)?;
    let ro_in_s = z(15)?;
    expect("roi_align_backward: grad_output too short", Shape, || {
        be.roi_align_backward(&rs, &ro_in_s, &rb, &mut mpx)
    })?;
    expect("roi_align_backward: boxes too short", Shape, || {
        be.roi_align_backward(&rs, &ro_in, &rb_s, &mut mpx)
    })?;
    expect("roi_align_backward: grad_features too short", Shape, || {
        be.roi_align_backward(&rs, &ro_in, &rb, &mut mpx_s)
    })?;
    let zero_scale = RoiAlignShape {
        spatial_scale: 0.0,
        ..rs
    };
    expect("roi_align_forward: spatial_scale 0", Invalid, || {
        be.roi_align_forward(&zero_scale, &px, &rb, &mut ro)
    })?;

    // ---- l2 normalise: 3 x 4 ----
    expect("l2_normalize_forward: x too short", Shape, || {
        be.l2_normalize_forward(&x11, &mut m12, &mut y3, 3, 4)
    })?;
    expect("l2_normalize_forward: y too short", Shape, || {
        be.l2_normalize_forward(&x12, &mut m11, &mut y3, 3, 4)
    })?;
    let mut n2 = z(2)?;
    expect("l2_normalize_forward: norms too short", Shape, || {
        be.l2_normalize_forward(&x12, &mut m12, &mut n2, 3, 4)
    })?;
    let n3 = z(3)?;
    let n2c = z(2)?;
    expect("l2_normalize_backward: y too short", Shape, || {
        be.l2_normalize_backward(&x11, &n3, &x12, &mut m12, 3, 4)
    })?;
    expect("l2_normalize_backward: norms too short", Shape, || {
        be.l2_normalize_backward(&x12, &n2c, &x12, &mut m12, 3, 4)
    })?;
    expect("l2_normalize_backward: grad_y too short", Shape, || {
        be.l2_normalize_backward(&x12, &n3, &x11, &mut m12, 3, 4)
    })?;
    expect("l2_normalize_backward: grad_x too short", Shape, || {
        be.l2_normalize_backward(&x12, &n3, &x12, &mut m11, 3, 4)
    })?;

    // ---- rows: 3 x 4 ----
    let rd = RowsDesc::new(3, 4);
    expect("row_softmax: x too short", Shape, || {
        be.row_softmax(&rd, &x11, &mut m12)
    })?;
    expect("row_softmax: y too short", Shape, || {
        be.row_softmax(&rd, &x12, &mut m11)
    })?;
    expect("row_logsumexp: x too short", Shape, || {
        be.row_logsumexp(&rd, &x11, &mut y3)
    })?;
    let mut o2 = z(2)?;
    expect("row_logsumexp: out too short", Shape, || {
        be.row_logsumexp(&rd, &x12, &mut o2)
    })?;
    let over = RowsDesc {
        valid_cols: 5,
        ..rd
    };
    expect("row_softmax: valid_cols > cols", Invalid, || {
        be.row_softmax(&over, &x12, &mut m12)
    })?;
    expect("soft_cross_entropy: logits too short", Shape, || {
        be.soft_cross_entropy(&rd, 1.0, &mut m11, &x12, &mut y3)
    })?;
    expect("soft_cross_entropy: targets too short", Shape, || {
        be.soft_cross_entropy(&rd, 1.0, &mut m12, &x11, &mut y3)
    })?;
    expect("soft_cross_entropy: loss too short", Shape, || {
        be.soft_cross_entropy(&rd, 1.0, &mut m12, &x12, &mut o2)
    })?;
    let (l3, l2) = (zi(3)?, zi(2)?);
    expect("softmax_cross_entropy: logits too short", Shape, || {
        be.softmax_cross_entropy(&rd, 1.0, &mut m11, &l3, &mut y3)
    })?;
    expect("softmax_cross_entropy: labels too short", Shape, || {
        be.softmax_cross_entropy(&rd, 1.0, &mut m12, &l2, &mut y3)
    })?;
    expect("softmax_cross_entropy: loss too short", Shape, || {
        be.softmax_cross_entropy(&rd, 1.0, &mut m12, &l3, &mut o2)
    })?;

    // ---- contrastive rows: B = 2, K = 2 -> 6 columns; block rows 1..2 ----
    let cd = ContrastiveRowsDesc {
        rows: 1,
        row_offset: 1,
        batch: 2,
        cols: 6,
        valid_cols: 6,
        num_classes: 3,
        weighting: PositiveWeighting::Decoupled { beta: 8.0 },
        grad_scale: 0.5,
    };
    let (mut lg6, mut lg5) = (z(6)?, z(5)?);
    let (lab6, lab5) = (zi(6)?, zi(5)?);
    let (mut loss2, mut loss1) = (z(2)?, z(1)?);
    expect("contrastive_rows: logits too short", Shape, || {
        be.contrastive_rows(&cd, &mut lg5, &lab6, &mut loss2)
    })?;
    expect("contrastive_rows: labels too short", Shape, || {
        be.contrastive_rows(&cd, &mut lg6, &lab5, &mut loss2)
    })?;
    expect(
        "contrastive_rows: loss too short (row_offset + rows)",
        Shape,
        || be.contrastive_rows(&cd, &mut lg6, &lab6, &mut loss1),
    )?;
    let narrow = ContrastiveRowsDesc {
        valid_cols: 3,
        ..cd
    };
    expect("contrastive_rows: valid_cols < 2B", Invalid, || {
        be.contrastive_rows(&narrow, &mut lg6, &lab6, &mut loss2)
    })?;
    let past = ContrastiveRowsDesc { rows: 2, ..cd };
    let mut lg12 = z(12)?;
    let mut loss3 = z(3)?;
    expect("contrastive_rows: block past the batch", Invalid, || {
        be.contrastive_rows(&past, &mut lg12, &lab6, &mut loss3)
    })?;

    // ---- optimisation ----
    let sp = SgdParams {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 5e-4,
        dampening: 0.0,
        nesterov: true,
        first_step: false,
    };
    let (mut w4, mut w3) = (z(4)?, z(3)?);
    let (mut v4, mut v3) = (z(4)?, z(3)?);
    expect("sgd: weights too short", Shape, || {
        be.sgd_momentum_update(&sp, &mut w3, &x4, &mut v4, 4)
    })?;
    expect("sgd: grads too short", Shape, || {
        be.sgd_momentum_update(&sp, &mut w4, &x3, &mut v4, 4)
    })?;
    expect("sgd: velocity too short", Shape, || {
        be.sgd_momentum_update(&sp, &mut w4, &x4, &mut v3, 4)
    })?;
    let neg_lr = SgdParams { lr: -0.1, ..sp };
    expect("sgd: negative lr", Invalid, || {
        be.sgd_momentum_update(&neg_lr, &mut w4, &x4, &mut v4, 4)
    })?;
    let damp_nesterov = SgdParams {
        dampening: 0.1,
        ..sp
    };
    expect("sgd: Nesterov with dampening", Invalid, || {
        be.sgd_momentum_update(&damp_nesterov, &mut w4, &x4, &mut v4, 4)
    })?;
    expect("ema: source too short", Shape, || {
        be.ema_update(0.999, &x3, &mut w4, 4)
    })?;
    expect("ema: target too short", Shape, || {
        be.ema_update(0.999, &x4, &mut w3, 4)
    })?;

    ctx.no_faults("shape_errors", case)
}

fn ctx_zero<B: Backend>() -> B::Elem {
    <B::Elem as num_traits::Zero>::zero()
}
