//! conv2d forward, backward-data and backward-filter (accumulating) on random shapes:
//! kernels 1/3/7 (mostly square), stride 1/2, padding 0..=k/2.

use super::shape_errors::{expect, shape_tools, ShapeCase, Want::Invalid, Want::Shape};
use crate::gen::Gen;
use crate::harness::{Config, Ctx, Factory, FamilyReport, OrFail, Res};
use crate::tol;
use dscl_core::backend::prelude::*;
use dscl_core::desc::Conv2dShape;
use dscl_core::{Backend, BufferLen};
use proptest::prelude::*;
use std::cell::RefCell;

#[derive(Clone, Debug)]
struct Case {
    shape: Conv2dShape,
    seed: u64,
}

pub(crate) fn run<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    // Mostly small; one case in six with more channels and larger images.
    let channels = prop_oneof![
        5 => (1..=cfg.dim(6, 3), 1..=cfg.dim(6, 3), Just(cfg.dim(12, 5))),
        1 => (
            cfg.dim(8, 2)..=cfg.dim(16, 4),
            cfg.dim(8, 2)..=cfg.dim(16, 4),
            Just(cfg.dim(24, 6)),
        ),
    ];
    let strategy = (
        (1usize..=3, channels),
        (
            prop::sample::select(vec![1usize, 3, 7]),
            prop_oneof![3 => Just(None), 1 => prop::sample::select(vec![1usize, 3, 7]).prop_map(Some)],
            1usize..=2,
            0usize..=3,
        ),
        (0.0f64..=1.0, 0.0f64..=1.0, any::<u64>()),
    )
        .prop_map(
            |((batch, (in_channels, out_channels, max_extra)), (kh, kw, stride, pad_pick), (fh, fw, seed))| {
                let (eh, ew) = (
                    (fh * max_extra as f64) as usize,
                    (fw * max_extra as f64) as usize,
                );
                let kernel_w = kw.unwrap_or(kh);
                let padding = pad_pick.min(kh.min(kernel_w) / 2);
                let min_h = (kh as isize - 2 * padding as isize).max(1) as usize;
                let min_w = (kernel_w as isize - 2 * padding as isize).max(1) as usize;
                Case {
                    shape: Conv2dShape {
                        batch,
                        in_channels,
                        in_height: min_h + eh,
                        in_width: min_w + ew,
                        out_channels,
                        kernel_h: kh,
                        kernel_w,
                        stride,
                        padding,
                    },
                    seed,
                }
            },
        );
    case_fn!(Runner, Case, run_case);
    crate::harness::run_family("conv2d", cfg, make, 160, strategy, Runner)
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

fn run_case<B: Backend>(ctx: &Ctx<'_, B>, case: &Case) -> Res<()> {
    let s = &case.shape;
    let mut g = Gen::new(case.seed);
    let eps = ctx.eps();
    let (oh, ow) = (s.out_height(), s.out_width());
    let in_dims = [s.batch, s.in_channels, s.in_height, s.in_width];
    let w_dims = [s.out_channels, s.in_channels, s.kernel_h, s.kernel_w];
    let out_dims = [s.batch, s.out_channels, oh, ow];
    let fan_in = s.in_channels * s.kernel_h * s.kernel_w;

    // Each side gets its own scratch of the size it asks for, filled with garbage: a workspace
    // is scratch, never assumed zero.
    let ws_be_len = ctx.be.conv2d_workspace_len(s);
    let ws_rf_len = ctx.rf.conv2d_workspace_len(s);
    let mut ws_be = ctx.be_buf(&g.poison(ws_be_len))?;
    let mut ws_rf = ctx.rf.alloc(ws_rf_len).or_fail("oracle alloc")?;
    if ws_be.len() != ws_be_len {
        return Err(proptest::test_runner::TestCaseError::fail(
            "workspace alloc length",
        ));
    }

    let sl = g.slack();
    let x_init = g.normal_vec(s.input_len() + sl, 1.0);
    let sl = g.slack();
    let w_init = g.normal_vec(s.weight_len() + sl, 1.0 / (fan_in as f64).sqrt());
    let x = ctx.buf(&x_init)?;
    let w = ctx.buf(&w_init)?;
    let xa = ctx.buf(&abs(&x_init))?;
    let wa = ctx.buf(&abs(&w_init))?;

    // forward: output written (poisoned on entry).
    let out_n = s.output_len() + g.slack();
    let mut y = ctx.buf(&g.poison(out_n))?;
    ctx.be
        .conv2d_forward(s, &x.be, &w.be, &mut y.be, &mut ws_be)
        .or_fail("conv2d_forward")?;
    ctx.rf
        .conv2d_forward(s, &x.rf, &w.rf, &mut y.rf, &mut ws_rf)
        .or_fail("oracle conv2d_forward")?;
    let mut ya = ctx.buf(&vec![0.0; out_n])?;
    ctx.rf
        .conv2d_forward(s, &xa.rf, &wa.rf, &mut ya.rf, &mut ws_rf)
        .or_fail("oracle conv2d_forward (magnitudes)")?;
    let mag = ctx.read_rf(&ya.rf)?;
    let k = tol::CONV * eps * tol::growth(fan_in);
    let mut t = vec![0.0; out_n];
    for e in 0..s.output_len() {
        t[e] = k * mag[e];
    }
    // Slack elements of a poisoned output are NaN on both sides; compare them exactly.
    let y_be = ctx.read_be(&y.be)?;
    let y_rf = ctx.read_rf(&y.rf)?;
    ctx.check_values("conv2d_forward", "output", s, &out_dims, &y_be, &y_rf, &t)?;

    // backward data: grad_input written (poisoned on entry).
    let sl = g.slack();
    let gy_init = g.normal_vec(s.output_len() + sl, 1.0);
    let gy = ctx.buf(&gy_init)?;
    let gya = ctx.buf(&abs(&gy_init))?;
    let in_n = s.input_len() + g.slack();
    let mut gx = ctx.buf(&g.poison(in_n))?;
    let mut ws_be = ctx.be_buf(&g.poison(ws_be_len))?;
    ctx.be
        .conv2d_backward_data(s, &gy.be, &w.be, &mut gx.be, &mut ws_be)
        .or_fail("conv2d_backward_data")?;
    ctx.rf
        .conv2d_backward_data(s, &gy.rf, &w.rf, &mut gx.rf, &mut ws_rf)
        .or_fail("oracle conv2d_backward_data")?;
    let mut gxa = ctx.buf(&vec![0.0; in_n])?;
    ctx.rf
        .conv2d_backward_data(s, &gya.rf, &wa.rf, &mut gxa.rf, &mut ws_rf)
        .or_fail("oracle conv2d_backward_data (magnitudes)")?;
    let mag = ctx.read_rf(&gxa.rf)?;
    let k = tol::CONV * eps * tol::growth(s.out_channels * s.kernel_h * s.kernel_w);
    let mut t = vec![0.0; in_n];
    for e in 0..s.input_len() {
        t[e] = k * mag[e];
    }
    ctx.check("conv2d_backward_data", "grad_input", s, &in_dims, &gx, &t)?;

    // backward filter: grad_weight += (pre-filled with random values).
    let wn = s.weight_len() + g.slack();
    let gw0 = g.normal_vec(wn, 1.0);
    let mut gw = ctx.buf(&gw0)?;
    let mut ws_be = ctx.be_buf(&g.poison(ws_be_len))?;
    ctx.be
        .conv2d_backward_filter(s, &x.be, &gy.be, &mut gw.be, &mut ws_be)
        .or_fail("conv2d_backward_filter")?;
    ctx.rf
        .conv2d_backward_filter(s, &x.rf, &gy.rf, &mut gw.rf, &mut ws_rf)
        .or_fail("oracle conv2d_backward_filter")?;
    let mut gwa = ctx.buf(&vec![0.0; wn])?;
    ctx.rf
        .conv2d_backward_filter(s, &xa.rf, &gya.rf, &mut gwa.rf, &mut ws_rf)
        .or_fail("oracle conv2d_backward_filter (magnitudes)")?;
    let mag = ctx.read_rf(&gwa.rf)?;
    let k = tol::CONV * eps * tol::growth(s.batch * oh * ow);
    let mut t = vec![0.0; wn];
    for e in 0..s.weight_len() {
        t[e] = k * (mag[e] + gw0[e].abs() as f64);
    }
    ctx.check("conv2d_backward_filter", "grad_weight", s, &w_dims, &gw, &t)?;
    ctx.no_faults("conv2d", case)
}

/// This family's shape errors, one of [`super::shape_errors`]'s table: each buffer one element
/// short is `ShapeMismatch`, each listed bad argument `InvalidArgument`, none a panic.
pub(crate) fn shape_errors<B: Backend>(ctx: &Ctx<'_, B>, _case: &ShapeCase) -> Res<()> {
    let (be, z, _, _) = shape_tools(ctx);
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
    Ok(())
}
