//! relu forward/backward (exact), max_pool2d forward (values and argmax exact, ties included) /
//! backward, global average pooling forward/backward.

use super::shape_errors::{expect, shape_tools, ShapeCase, Want::Invalid, Want::Shape};
use crate::gen::Gen;
use crate::harness::{Config, Ctx, Factory, FamilyReport, OrFail, Res};
use crate::tol;
use dscl_core::backend::prelude::*;
use dscl_core::desc::PoolShape;
use proptest::prelude::*;
use std::cell::RefCell;

#[derive(Clone, Debug)]
struct ReluCase {
    len: usize,
    seed: u64,
}

pub(crate) fn relu<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    let strategy = (
        prop_oneof![
            2 => 0..=16usize,
            3 => 0..=cfg.dim(4000, 300),
            1 => cfg.dim(40_000, 300)..=cfg.dim(120_000, 2000),
        ],
        any::<u64>(),
    )
        .prop_map(|(len, seed)| ReluCase { len, seed });
    case_fn!(Runner, ReluCase, relu_case);
    crate::harness::run_family("relu", cfg, make, 64, strategy, Runner)
}

fn relu_case<B: Backend>(ctx: &Ctx<'_, B>, case: &ReluCase) -> Res<()> {
    let mut g = Gen::new(case.seed);
    let len = case.len;
    // Some exact zeros and negative zeros.
    let x_init: Vec<f32> = (0..len + g.slack())
        .map(|_| match g.below(10) {
            0 => 0.0,
            1 => -0.0,
            _ => g.normal(),
        })
        .collect();
    let n = len + g.slack();
    let x = ctx.buf(&x_init)?;
    let mut y = ctx.buf(&g.poison(n))?;
    ctx.be
        .relu_forward(&x.be, &mut y.be, len)
        .or_fail("relu_forward")?;
    ctx.rf
        .relu_forward(&x.rf, &mut y.rf, len)
        .or_fail("oracle relu_forward")?;
    ctx.check("relu_forward", "y", case, &[len], &y, &vec![0.0; n])?;

    // backward on y = relu(x) (host, exact), grad_x written.
    let y_init: Vec<f32> = (0..len + g.slack())
        .map(|e| if e < len { x_init[e].max(0.0) } else { 5.0 })
        .collect();
    let yb = ctx.buf(&y_init)?;
    let sl = g.slack();
    let gy = ctx.buf(&g.normal_vec(len + sl, 1.0))?;
    let mut gx = ctx.buf(&g.poison(n))?;
    ctx.be
        .relu_backward(&yb.be, &gy.be, &mut gx.be, len)
        .or_fail("relu_backward")?;
    ctx.rf
        .relu_backward(&yb.rf, &gy.rf, &mut gx.rf, len)
        .or_fail("oracle relu_backward")?;
    ctx.check("relu_backward", "grad_x", case, &[len], &gx, &vec![0.0; n])?;
    ctx.no_faults("relu", case)
}

#[derive(Clone, Debug)]
struct PoolCase {
    shape: PoolShape,
    /// Small integers (many ties) instead of continuous values.
    ties: bool,
    /// Global average pooling's spatial size.
    spatial: usize,
    seed: u64,
}

pub(crate) fn pooling<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    // Mostly small images; one case in five large enough (> 32k elements) to be split across
    // threads by a parallel backend.
    let sizes = prop_oneof![
        4 => (1..=cfg.dim(4, 2), 0..=cfg.dim(20, 8), 0..=cfg.dim(20, 8), 1..=cfg.dim(300, 40)),
        1 => (
            cfg.dim(8, 2)..=cfg.dim(16, 3),
            cfg.dim(24, 4)..=cfg.dim(48, 8),
            cfg.dim(24, 4)..=cfg.dim(48, 8),
            cfg.dim(1024, 40)..=cfg.dim(4096, 64),
        ),
    ];
    let window = prop_oneof![
        1 => Just((3usize, 2usize, 1usize)), // the ResNet stem pool
        3 => (1usize..=3, 1usize..=3, 0usize..=1).prop_map(|(k, s, p)| (k, s, p.min(k / 2))),
    ];
    let strategy = ((1usize..=2, window), sizes, (any::<bool>(), any::<u64>())).prop_map(
        |((batch, (kernel, stride, padding)), (channels, eh, ew, spatial), (ties, seed))| {
            let min = (kernel as isize - 2 * padding as isize).max(1) as usize;
            PoolCase {
                shape: PoolShape {
                    batch,
                    channels,
                    in_height: min + eh,
                    in_width: min + ew,
                    kernel,
                    stride,
                    padding,
                },
                ties,
                spatial,
                seed,
            }
        },
    );
    case_fn!(Runner, PoolCase, pool_case);
    crate::harness::run_family("pooling", cfg, make, 128, strategy, Runner)
}

fn pool_case<B: Backend>(ctx: &Ctx<'_, B>, case: &PoolCase) -> Res<()> {
    let s = &case.shape;
    let mut g = Gen::new(case.seed);
    let eps = ctx.eps();
    let (oh, ow) = (s.out_height(), s.out_width());
    let planes = s.batch * s.channels;
    let in_dims = [s.batch, s.channels, s.in_height, s.in_width];
    let out_dims = [s.batch, s.channels, oh, ow];

    // ---- max_pool2d forward: values and argmax exact ----
    let xl = s.input_len() + g.slack();
    let x_init = if case.ties {
        g.int_vec(xl, 2)
    } else {
        g.normal_vec(xl, 1.0)
    };
    let x = ctx.buf(&x_init)?;
    let on = s.output_len() + g.slack();
    let mut y = ctx.buf(&g.poison(on))?;
    let am_init: Vec<u32> = (0..on).map(|_| u32::MAX).collect();
    let mut am = ctx.idx(&am_init)?;
    ctx.be
        .max_pool2d_forward(s, &x.be, &mut y.be, &mut am.be)
        .or_fail("max_pool2d_forward")?;
    ctx.rf
        .max_pool2d_forward(s, &x.rf, &mut y.rf, &mut am.rf)
        .or_fail("oracle max_pool2d_forward")?;
    ctx.check(
        "max_pool2d_forward",
        "y",
        case,
        &out_dims,
        &y,
        &vec![0.0; on],
    )?;
    ctx.check_idx("max_pool2d_forward", "argmax", case, &out_dims, &am)?;

    // ---- backward on the oracle's argmax: grad_x = 0, then scatter-add ----
    let argmax = ctx.read_rf_idx(&am.rf)?;
    let am_both = ctx.idx(&argmax)?;
    let sl = g.slack();
    let gy_init = g.normal_vec(s.output_len() + sl, 1.0);
    let gy = ctx.buf(&gy_init)?;
    let xn = s.input_len() + g.slack();
    let mut gx = ctx.buf(&g.poison(xn))?;
    ctx.be
        .max_pool2d_backward(s, &gy.be, &am_both.be, &mut gx.be)
        .or_fail("max_pool2d_backward")?;
    ctx.rf
        .max_pool2d_backward(s, &gy.rf, &am_both.rf, &mut gx.rf)
        .or_fail("oracle max_pool2d_backward")?;
    let plane_in = s.in_height * s.in_width;
    let plane_out = oh * ow;
    let mut mag = vec![0.0f64; xn];
    let mut hits = vec![0usize; xn];
    for p in 0..planes {
        for o in 0..plane_out {
            let a = argmax[p * plane_out + o] as usize;
            if a < plane_in {
                mag[p * plane_in + a] += (gy_init[p * plane_out + o] as f64).abs();
                hits[p * plane_in + a] += 1;
            }
        }
    }
    let t: Vec<f64> = (0..xn)
        .map(|i| {
            if i < s.input_len() {
                tol::REDUCTION * eps * tol::growth(hits[i]) * mag[i]
            } else {
                0.0
            }
        })
        .collect();
    ctx.check("max_pool2d_backward", "grad_x", case, &in_dims, &gx, &t)?;

    // ---- global average pooling ----
    let (b, c, sp) = (s.batch, s.channels, case.spatial);
    let sl = g.slack();
    let xg_init = g.normal_vec(b * c * sp + sl, 1.0);
    let xg = ctx.buf(&xg_init)?;
    let yn = b * c + g.slack();
    let mut yg = ctx.buf(&g.poison(yn))?;
    ctx.be
        .global_avg_pool_forward(&xg.be, &mut yg.be, b, c, sp)
        .or_fail("global_avg_pool_forward")?;
    ctx.rf
        .global_avg_pool_forward(&xg.rf, &mut yg.rf, b, c, sp)
        .or_fail("oracle global_avg_pool_forward")?;
    let t: Vec<f64> = (0..yn)
        .map(|i| {
            if i < b * c {
                let m: f64 = xg_init[i * sp..(i + 1) * sp]
                    .iter()
                    .map(|v| (*v as f64).abs())
                    .sum::<f64>()
                    / sp as f64;
                tol::REDUCTION * eps * tol::growth(sp) * m
            } else {
                0.0
            }
        })
        .collect();
    ctx.check(
        "global_avg_pool_forward",
        "y",
        &(b, c, sp),
        &[b, c],
        &yg,
        &t,
    )?;

    let sl = g.slack();
    let gyg_init = g.normal_vec(b * c + sl, 1.0);
    let gyg = ctx.buf(&gyg_init)?;
    let xgn = b * c * sp + g.slack();
    let mut gxg = ctx.buf(&g.poison(xgn))?;
    ctx.be
        .global_avg_pool_backward(&gyg.be, &mut gxg.be, b, c, sp)
        .or_fail("global_avg_pool_backward")?;
    ctx.rf
        .global_avg_pool_backward(&gyg.rf, &mut gxg.rf, b, c, sp)
        .or_fail("oracle global_avg_pool_backward")?;
    let t: Vec<f64> = (0..xgn)
        .map(|i| {
            if i < b * c * sp {
                tol::ELEMENTWISE * eps * (gyg_init[i / sp] as f64).abs() / sp as f64
            } else {
                0.0
            }
        })
        .collect();
    ctx.check(
        "global_avg_pool_backward",
        "grad_x",
        &(b, c, sp),
        &[b, c, sp],
        &gxg,
        &t,
    )?;
    ctx.no_faults("pooling", case)
}

/// This family's shape errors, one of [`super::shape_errors`]'s table: each buffer one element
/// short is `ShapeMismatch`, each listed bad argument `InvalidArgument`, none a panic.
pub(crate) fn shape_errors<B: Backend>(ctx: &Ctx<'_, B>, _case: &ShapeCase) -> Res<()> {
    let (be, z, zi, _) = shape_tools(ctx);
    let (x3, x4) = (z(3)?, z(4)?);
    let (mut y3, mut y4) = (z(3)?, z(4)?);
    let mut b3 = z(3)?;
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
    Ok(())
}
