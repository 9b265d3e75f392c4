//! sgd_momentum_update (first step, Nesterov, dampening, weight decay) and ema_update.

use super::shape_errors::{expect, shape_tools, ShapeCase, Want::Invalid, Want::Shape};
use crate::gen::Gen;
use crate::harness::{Config, Ctx, Factory, FamilyReport, OrFail, Res};
use crate::tol;
use dscl_core::backend::prelude::*;
use dscl_core::desc::SgdParams;
use proptest::prelude::*;
use std::cell::RefCell;

#[derive(Clone, Debug)]
struct Case {
    len: usize,
    params: SgdParams,
    ema_momentum: f64,
    seed: u64,
}

pub(crate) fn run<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    let strategy = (
        prop_oneof![
            2 => 0..=8usize,
            6 => 1..=cfg.dim(3000, 200),
            1 => cfg.dim(40_000, 300)..=cfg.dim(120_000, 2000),
        ],
        (
            prop_oneof![2 => Just(0.1f64), 1 => 0.0f64..1.0, 1 => Just(0.0)],
            prop_oneof![2 => Just(0.9f64), 1 => 0.0f64..0.99, 1 => Just(0.0)],
            prop_oneof![1 => Just(0.0f64), 1 => Just(5e-4), 1 => 0.0f64..0.1],
            prop_oneof![3 => Just(0.0f64), 1 => 0.0f64..0.5],
            any::<bool>(),
            any::<bool>(),
        ),
        prop_oneof![2 => Just(0.999f64), 1 => Just(0.0), 1 => Just(1.0), 1 => 0.0f64..1.0],
        any::<u64>(),
    )
        .prop_map(
            |(len, (lr, momentum, weight_decay, dampening, nesterov, first_step), ema, seed)| {
                // Nesterov needs momentum > 0 and no dampening. Momentum 0 with a dampening
                // stays in: like PyTorch, the step is then along g itself, whatever the
                // dampening, and the velocity is not used.
                let nesterov = nesterov && momentum > 0.0;
                let dampening = if nesterov { 0.0 } else { dampening };
                Case {
                    len,
                    params: SgdParams {
                        lr,
                        momentum,
                        weight_decay,
                        dampening,
                        nesterov,
                        first_step,
                    },
                    ema_momentum: ema,
                    seed,
                }
            },
        );
    case_fn!(Runner, Case, run_case);
    crate::harness::run_family("optim", cfg, make, 128, strategy, Runner)
}

fn run_case<B: Backend>(ctx: &Ctx<'_, B>, case: &Case) -> Res<()> {
    let mut g = Gen::new(case.seed);
    let eps = ctx.eps();
    let len = case.len;
    let p = &case.params;

    // ---- SGD ----
    let wn = len + g.slack();
    let w_init = g.normal_vec(wn, 1.0);
    let sl = g.slack();
    let g_init = g.normal_vec(len + sl, 1.0);
    let vn = len + g.slack();
    // On the first step the velocity is initialised from g, never read: poison it.
    let v_init = if p.first_step {
        g.poison(vn)
    } else {
        g.normal_vec(vn, 1.0)
    };
    let mut w = ctx.buf(&w_init)?;
    let grads = ctx.buf(&g_init)?;
    let mut v = ctx.buf(&v_init)?;
    ctx.be
        .sgd_momentum_update(p, &mut w.be, &grads.be, &mut v.be, len)
        .or_fail("sgd_momentum_update")?;
    ctx.rf
        .sgd_momentum_update(p, &mut w.rf, &grads.rf, &mut v.rf, len)
        .or_fail("oracle sgd_momentum_update")?;
    let (m, wd) = (p.momentum, p.weight_decay);
    let mut t_w = vec![0.0; wn];
    let mut t_v = vec![0.0; vn];
    for e in 0..len {
        let pw = (w_init[e] as f64).abs();
        let mag_g = (g_init[e] as f64).abs() + wd * pw;
        let old_v = if p.first_step {
            0.0
        } else {
            m * (v_init[e] as f64).abs()
        };
        let mag_v = old_v + mag_g;
        t_v[e] = tol::SGD * eps * mag_v;
        t_w[e] = tol::SGD * eps * (pw + p.lr * (mag_g + mag_v + m * mag_v));
    }
    ctx.check("sgd_momentum_update", "weights", case, &[len], &w, &t_w)?;
    ctx.check("sgd_momentum_update", "velocity", case, &[len], &v, &t_v)?;

    // ---- EMA ----
    let mm = case.ema_momentum;
    let sl = g.slack();
    let s_init = g.normal_vec(len + sl, 1.0);
    let tn = len + g.slack();
    let t_init = g.normal_vec(tn, 1.0);
    let src = ctx.buf(&s_init)?;
    let mut tgt = ctx.buf(&t_init)?;
    ctx.be
        .ema_update(mm, &src.be, &mut tgt.be, len)
        .or_fail("ema_update")?;
    ctx.rf
        .ema_update(mm, &src.rf, &mut tgt.rf, len)
        .or_fail("oracle ema_update")?;
    // `1 - m` formed in the element type carries an absolute error u, hence the |t - s| term.
    let t: Vec<f64> = (0..tn)
        .map(|e| {
            if e < len {
                let (tv, sv) = (t_init[e] as f64, s_init[e] as f64);
                tol::ELEMENTWISE
                    * eps
                    * ((mm * tv).abs() + ((1.0 - mm) * sv).abs() + (tv - sv).abs())
            } else {
                0.0
            }
        })
        .collect();
    ctx.check("ema_update", "target", &(case, mm), &[len], &tgt, &t)?;
    ctx.no_faults("optim", case)
}

/// This family's shape errors, one of [`super::shape_errors`]'s table: each buffer one element
/// short is `ShapeMismatch`, each listed bad argument `InvalidArgument`, none a panic.
pub(crate) fn shape_errors<B: Backend>(ctx: &Ctx<'_, B>, _case: &ShapeCase) -> Res<()> {
    let (be, z, _, _) = shape_tools(ctx);
    let (x3, x4) = (z(3)?, z(4)?);
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
    Ok(())
}
