//! Batch norm: training forward (outputs, saved mean / inverse std, running statistics),
//! inference forward, and backward (dx written, dgamma/dbeta accumulated).

use super::shape_errors::{expect, shape_tools, ShapeCase, Want::Invalid, Want::Shape};
use crate::gen::Gen;
use crate::harness::{fail, Config, Ctx, Factory, FamilyReport, OrFail, Res};
use crate::tol;
use dscl_core::backend::prelude::*;
use dscl_core::desc::BatchNormShape;
use proptest::prelude::*;
use std::cell::RefCell;

#[derive(Clone, Debug)]
struct Case {
    shape: BatchNormShape,
    seed: u64,
}

pub(crate) fn run<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    let strategy = (
        1..=cfg.dim(4, 2),
        1..=cfg.dim(6, 3),
        prop_oneof![
            1 => Just(1usize),
            4 => 1..=cfg.dim(64, 16),
            1 => cfg.dim(1024, 16)..=cfg.dim(4096, 64),
        ],
        prop::sample::select(vec![1e-5f64, 1e-3, 0.1]),
        prop_oneof![2 => Just(0.1f64), 1 => Just(0.0), 1 => Just(1.0), 1 => 0.0f64..1.0],
        any::<u64>(),
    )
        .prop_map(|(batch, channels, spatial, eps, momentum, seed)| Case {
            shape: BatchNormShape {
                batch,
                channels,
                spatial,
                eps,
                momentum,
                groups: 1,
                running_every: 1,
            },
            seed,
        });
    case_fn!(Runner, Case, run_case);
    crate::harness::run_family("batch_norm", cfg, make, 128, strategy, Runner)
}

/// Index of (n, c, s) in `[batch, channels, spatial]`.
fn at(s: &BatchNormShape, n: usize, c: usize, e: usize) -> usize {
    (n * s.channels + c) * s.spatial + e
}

/// Per-channel host statistics in f64 (for the tolerances only).
struct ChannelStats {
    mean: f64,
    var: f64,
    mean_abs: f64,
    mean_sq: f64,
}

fn channel_stats(s: &BatchNormShape, x: &[f32]) -> Vec<ChannelStats> {
    let n = (s.batch * s.spatial) as f64;
    (0..s.channels)
        .map(|c| {
            let vals: Vec<f64> = (0..s.batch)
                .flat_map(|b| (0..s.spatial).map(move |e| (b, e)))
                .map(|(b, e)| x[at(s, b, c, e)] as f64)
                .collect();
            let mean = vals.iter().sum::<f64>() / n;
            let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            ChannelStats {
                mean,
                var,
                mean_abs: vals.iter().map(|v| v.abs()).sum::<f64>() / n,
                mean_sq: vals.iter().map(|v| v * v).sum::<f64>() / n,
            }
        })
        .collect()
}

fn run_case<B: Backend>(ctx: &Ctx<'_, B>, case: &Case) -> Res<()> {
    let s = &case.shape;
    let mut g = Gen::new(case.seed);
    let eps = ctx.eps();
    let len = s.len();
    let ch = s.channels;
    let n = s.batch * s.spatial;
    let dims = [s.batch, s.channels, s.spatial];
    let m = s.momentum;

    // x: per channel an offset in [-1.5, 1.5] and a spread in [0.5, 2].
    let offs: Vec<f64> = (0..ch).map(|_| g.uniform(-1.5, 1.5) as f64).collect();
    let spreads: Vec<f64> = (0..ch).map(|_| g.uniform(0.5, 2.0) as f64).collect();
    let mut x_init = vec![0.0f32; len + g.slack()];
    for b in 0..s.batch {
        for c in 0..ch {
            for e in 0..s.spatial {
                x_init[at(s, b, c, e)] = (offs[c] + spreads[c] * g.normal() as f64) as f32;
            }
        }
    }
    let sl = g.slack();
    let gamma_init = g.normal_vec(ch + sl, 1.0);
    let sl = g.slack();
    let beta_init = g.normal_vec(ch + sl, 1.0);
    let sl = g.slack();
    let rm_init = g.normal_vec(ch + sl, 1.0);
    let sl = g.slack();
    let rv_init: Vec<f32> = (0..ch + sl).map(|_| g.uniform(0.2, 3.0)).collect();
    let stats = channel_stats(s, &x_init);
    let red = tol::BATCH_NORM * eps * tol::growth(n);
    let cond: Vec<f64> = stats
        .iter()
        .map(|st| st.mean_sq / (st.var + s.eps) + 1.0)
        .collect();
    let invstd: Vec<f64> = stats
        .iter()
        .map(|st| 1.0 / (st.var + s.eps).sqrt())
        .collect();

    let x = ctx.buf(&x_init)?;
    let gamma = ctx.buf(&gamma_init)?;
    let beta = ctx.buf(&beta_init)?;

    // ---- training forward ----
    // Running statistics: `(1 - m) old + m new` loses up to `u (|old| + |new|)` when `1 - m` is
    // formed in the element type, whatever m is, hence no (1 - m), m weights on the rounding
    // term.
    let yn = len + g.slack();
    let mut y = ctx.buf(&g.poison(yn))?;
    let cn = ch + g.slack();
    let mut smean = ctx.buf(&g.poison(cn))?;
    let mut sinv = ctx.buf(&g.poison(cn))?;
    let mut rmean = ctx.buf(&rm_init)?;
    let mut rvar = ctx.buf(&rv_init)?;
    ctx.be
        .batch_norm_forward_train(
            s,
            BnTrain {
                x: &x.be,
                gamma: &gamma.be,
                beta: &beta.be,
                y: &mut y.be,
                save_mean: &mut smean.be,
                save_invstd: &mut sinv.be,
                running_mean: &mut rmean.be,
                running_var: &mut rvar.be,
            },
        )
        .or_fail("batch_norm_forward_train")?;
    ctx.rf
        .batch_norm_forward_train(
            s,
            BnTrain {
                x: &x.rf,
                gamma: &gamma.rf,
                beta: &beta.rf,
                y: &mut y.rf,
                save_mean: &mut smean.rf,
                save_invstd: &mut sinv.rf,
                running_mean: &mut rmean.rf,
                running_var: &mut rvar.rf,
            },
        )
        .or_fail("oracle batch_norm_forward_train")?;

    let mut t = vec![0.0; yn];
    for b in 0..s.batch {
        for c in 0..ch {
            for e in 0..s.spatial {
                let i = at(s, b, c, e);
                let xc = (x_init[i] as f64 - stats[c].mean).abs();
                let ga = (gamma_init[c] as f64).abs();
                t[i] = red * ga * invstd[c] * (stats[c].mean_abs + xc * cond[c])
                    + tol::ELEMENTWISE * eps * (beta_init[c] as f64).abs();
            }
        }
    }
    ctx.check("batch_norm_forward_train", "y", s, &dims, &y, &t)?;
    let mut t = vec![0.0; cn];
    for c in 0..ch {
        t[c] = red * stats[c].mean_abs;
    }
    ctx.check(
        "batch_norm_forward_train",
        "save_mean",
        s,
        &[ch],
        &smean,
        &t,
    )?;
    for c in 0..ch {
        t[c] = red * invstd[c] * cond[c];
    }
    ctx.check(
        "batch_norm_forward_train",
        "save_invstd",
        s,
        &[ch],
        &sinv,
        &t,
    )?;
    let mut t = vec![0.0; rm_init.len()];
    for c in 0..ch {
        t[c] = tol::ELEMENTWISE * eps * ((rm_init[c] as f64).abs() + stats[c].mean.abs())
            + m * red * stats[c].mean_abs;
    }
    ctx.check(
        "batch_norm_forward_train",
        "running_mean",
        s,
        &[ch],
        &rmean,
        &t,
    )?;
    let mut t = vec![0.0; rv_init.len()];
    for c in 0..ch {
        let unbiased = if n > 1 {
            stats[c].var * n as f64 / (n as f64 - 1.0)
        } else {
            0.0
        };
        t[c] = tol::ELEMENTWISE * eps * ((rv_init[c] as f64).abs() + unbiased)
            + m * red * unbiased * cond[c];
    }
    ctx.check(
        "batch_norm_forward_train",
        "running_var",
        s,
        &[ch],
        &rvar,
        &t,
    )?;

    // ---- inference forward (on the running statistics as given) ----
    let rm = ctx.buf(&rm_init)?;
    let rv = ctx.buf(&rv_init)?;
    let mut yi = ctx.buf(&g.poison(yn))?;
    ctx.be
        .batch_norm_forward_inference(
            s,
            BnInference {
                x: &x.be,
                gamma: &gamma.be,
                beta: &beta.be,
                running_mean: &rm.be,
                running_var: &rv.be,
                y: &mut yi.be,
            },
        )
        .or_fail("batch_norm_forward_inference")?;
    ctx.rf
        .batch_norm_forward_inference(
            s,
            BnInference {
                x: &x.rf,
                gamma: &gamma.rf,
                beta: &beta.rf,
                running_mean: &rm.rf,
                running_var: &rv.rf,
                y: &mut yi.rf,
            },
        )
        .or_fail("oracle batch_norm_forward_inference")?;
    let mut t = vec![0.0; yn];
    for b in 0..s.batch {
        for c in 0..ch {
            for e in 0..s.spatial {
                let i = at(s, b, c, e);
                let inv = 1.0 / (rv_init[c] as f64 + s.eps).sqrt();
                t[i] = tol::ELEMENTWISE
                    * eps
                    * ((gamma_init[c] as f64).abs()
                        * ((x_init[i] as f64).abs() + (rm_init[c] as f64).abs())
                        * inv
                        + (beta_init[c] as f64).abs());
            }
        }
    }
    ctx.check("batch_norm_forward_inference", "y", s, &dims, &yi, &t)?;

    // ---- backward, on the oracle's saved statistics (rounded to f32) for both sides ----
    let sm = ctx.oracle_f32(&smean)?;
    let si = ctx.oracle_f32(&sinv)?;
    let save_mean = ctx.buf(&sm)?;
    let save_inv = ctx.buf(&si)?;
    let sl = g.slack();
    let dy_init = g.normal_vec(len + sl, 1.0);
    let dy = ctx.buf(&dy_init)?;
    let mut dx = ctx.buf(&g.poison(yn))?;
    let dg0 = g.normal_vec(cn, 1.0);
    let db0 = g.normal_vec(cn, 1.0);
    let mut dgamma = ctx.buf(&dg0)?;
    let mut dbeta = ctx.buf(&db0)?;
    ctx.be
        .batch_norm_backward(
            s,
            BnBackward {
                x: &x.be,
                grad_y: &dy.be,
                gamma: &gamma.be,
                save_mean: &save_mean.be,
                save_invstd: &save_inv.be,
                grad_x: &mut dx.be,
                grad_gamma: &mut dgamma.be,
                grad_beta: &mut dbeta.be,
            },
        )
        .or_fail("batch_norm_backward")?;
    ctx.rf
        .batch_norm_backward(
            s,
            BnBackward {
                x: &x.rf,
                grad_y: &dy.rf,
                gamma: &gamma.rf,
                save_mean: &save_mean.rf,
                save_invstd: &save_inv.rf,
                grad_x: &mut dx.rf,
                grad_gamma: &mut dgamma.rf,
                grad_beta: &mut dbeta.rf,
            },
        )
        .or_fail("oracle batch_norm_backward")?;
    let mut t_dx = vec![0.0; yn];
    let mut t_dg = vec![0.0; cn];
    let mut t_db = vec![0.0; cn];
    for c in 0..ch {
        let (mu, inv) = (sm[c] as f64, si[c] as f64);
        let idx: Vec<usize> = (0..s.batch)
            .flat_map(|b| (0..s.spatial).map(move |e| at(s, b, c, e)))
            .collect();
        let xhat = |i: usize| (x_init[i] as f64 - mu) * inv;
        // Absolute error of xhat from rounding x - mean and the product.
        let xerr = |i: usize| ((x_init[i] as f64).abs() + mu.abs()) * inv;
        let nf = n as f64;
        let m_dy = idx.iter().map(|&i| (dy_init[i] as f64).abs()).sum::<f64>() / nf;
        let m_dyxh = idx
            .iter()
            .map(|&i| (dy_init[i] as f64 * xhat(i)).abs())
            .sum::<f64>()
            / nf;
        let m_dyerr = idx
            .iter()
            .map(|&i| (dy_init[i] as f64).abs() * xerr(i))
            .sum::<f64>()
            / nf;
        let ga = (gamma_init[c] as f64).abs();
        for &i in &idx {
            let xh = xhat(i).abs();
            t_dx[i] = red
                * ga
                * inv
                * ((dy_init[i] as f64).abs() + m_dy + (xh + xerr(i)) * m_dyxh + xh * m_dyerr);
        }
        let sum_dy: f64 = idx.iter().map(|&i| (dy_init[i] as f64).abs()).sum();
        let sum_dyx: f64 = idx
            .iter()
            .map(|&i| (dy_init[i] as f64).abs() * (xhat(i).abs() + xerr(i)))
            .sum();
        t_dg[c] = tol::ELEMENTWISE * eps * (dg0[c] as f64).abs() + red * sum_dyx;
        t_db[c] = tol::ELEMENTWISE * eps * (db0[c] as f64).abs() + red * sum_dy;
    }
    ctx.check("batch_norm_backward", "grad_x", s, &dims, &dx, &t_dx)?;
    ctx.check(
        "batch_norm_backward",
        "grad_gamma",
        s,
        &[ch],
        &dgamma,
        &t_dg,
    )?;
    ctx.check("batch_norm_backward", "grad_beta", s, &[ch], &dbeta, &t_db)?;
    ctx.no_faults("batch_norm", case)?;
    statistics_groups(ctx, case, &mut g)
}

/// The training forward and backward with 2 or 3 statistics groups of the case's batch each,
/// against the same backend called once per group on that group's block (the definition in
/// [`BatchNormShape`]): outputs, group-major saved statistics, the running statistics moved
/// by the chosen groups in order, and the parameter gradients accumulated group by group.
/// Then a NaN in a group that does not move the running statistics must leave them exactly
/// as the moving groups alone leave them.
fn statistics_groups<B: Backend>(ctx: &Ctx<'_, B>, case: &Case, g: &mut Gen) -> Res<()> {
    let groups = 2 + (case.seed % 2) as usize;
    let running_every = if case.seed.is_multiple_of(3) {
        1
    } else {
        groups
    };
    let one = BatchNormShape {
        groups: 1,
        running_every: 1,
        ..case.shape
    };
    let s = BatchNormShape {
        batch: one.batch * groups,
        groups,
        running_every,
        ..one
    };
    let (len, block, ch) = (s.len(), one.len(), s.channels);
    let x_init: Vec<f32> = (0..len)
        .map(|i| g.normal() * 1.5 + (i % 7) as f32 * 0.25)
        .collect();
    let gamma_init = g.normal_vec(ch, 1.0);
    let beta_init = g.normal_vec(ch, 1.0);
    let rm_init = g.normal_vec(ch, 1.0);
    let rv_init: Vec<f32> = (0..ch).map(|_| g.uniform(0.2, 3.0)).collect();
    let dy_init = g.normal_vec(len, 1.0);
    let dg_init = g.normal_vec(ch, 1.0);
    let db_init = g.normal_vec(ch, 1.0);
    let gamma = ctx.be_buf(&gamma_init)?;
    let beta = ctx.be_buf(&beta_init)?;

    // Grouped: one call each way.
    let x = ctx.be_buf(&x_init)?;
    let dy = ctx.be_buf(&dy_init)?;
    let mut y = ctx.be_buf(&g.poison(len))?;
    let mut smean = ctx.be_buf(&g.poison(s.saved_len()))?;
    let mut sinv = ctx.be_buf(&g.poison(s.saved_len()))?;
    let (mut rmean, mut rvar) = (ctx.be_buf(&rm_init)?, ctx.be_buf(&rv_init)?);
    ctx.be
        .batch_norm_forward_train(
            &s,
            BnTrain {
                x: &x,
                gamma: &gamma,
                beta: &beta,
                y: &mut y,
                save_mean: &mut smean,
                save_invstd: &mut sinv,
                running_mean: &mut rmean,
                running_var: &mut rvar,
            },
        )
        .or_fail("batch_norm_forward_train with statistics groups")?;
    let mut dx = ctx.be_buf(&g.poison(len))?;
    let (mut dgamma, mut dbeta) = (ctx.be_buf(&dg_init)?, ctx.be_buf(&db_init)?);
    ctx.be
        .batch_norm_backward(
            &s,
            BnBackward {
                x: &x,
                grad_y: &dy,
                gamma: &gamma,
                save_mean: &smean,
                save_invstd: &sinv,
                grad_x: &mut dx,
                grad_gamma: &mut dgamma,
                grad_beta: &mut dbeta,
            },
        )
        .or_fail("batch_norm_backward with statistics groups")?;

    // Separate: one call per group, the running statistics and parameter gradients threaded
    // through in group order.
    let mut want = GroupedResults::default();
    let (mut rm, mut rv) = (ctx.be_buf(&rm_init)?, ctx.be_buf(&rv_init)?);
    let (mut dg, mut db) = (ctx.be_buf(&dg_init)?, ctx.be_buf(&db_init)?);
    for k in 0..groups {
        let range = k * block..(k + 1) * block;
        let xk = ctx.be_buf(&x_init[range.clone()])?;
        let dyk = ctx.be_buf(&dy_init[range])?;
        let mut yk = ctx.be_buf(&g.poison(block))?;
        let (mut mk, mut ik) = (ctx.be_buf(&g.poison(ch))?, ctx.be_buf(&g.poison(ch))?);
        let (mut scratch_rm, mut scratch_rv) = (ctx.be_buf(&rm_init)?, ctx.be_buf(&rv_init)?);
        let (run_mean, run_var) = if s.moves_running(k) {
            (&mut rm, &mut rv)
        } else {
            (&mut scratch_rm, &mut scratch_rv)
        };
        ctx.be
            .batch_norm_forward_train(
                &one,
                BnTrain {
                    x: &xk,
                    gamma: &gamma,
                    beta: &beta,
                    y: &mut yk,
                    save_mean: &mut mk,
                    save_invstd: &mut ik,
                    running_mean: run_mean,
                    running_var: run_var,
                },
            )
            .or_fail("batch_norm_forward_train on one group")?;
        let mut dxk = ctx.be_buf(&g.poison(block))?;
        ctx.be
            .batch_norm_backward(
                &one,
                BnBackward {
                    x: &xk,
                    grad_y: &dyk,
                    gamma: &gamma,
                    save_mean: &mk,
                    save_invstd: &ik,
                    grad_x: &mut dxk,
                    grad_gamma: &mut dg,
                    grad_beta: &mut db,
                },
            )
            .or_fail("batch_norm_backward on one group")?;
        want.y.extend(ctx.read_be(&yk)?);
        want.save_mean.extend(ctx.read_be(&mk)?);
        want.save_invstd.extend(ctx.read_be(&ik)?);
        want.grad_x.extend(ctx.read_be(&dxk)?);
    }
    let pairs = [
        ("y", ctx.read_be(&y)?, want.y),
        ("save_mean", ctx.read_be(&smean)?, want.save_mean),
        ("save_invstd", ctx.read_be(&sinv)?, want.save_invstd),
        ("running_mean", ctx.read_be(&rmean)?, ctx.read_be(&rm)?),
        ("running_var", ctx.read_be(&rvar)?, ctx.read_be(&rv)?),
        ("grad_x", ctx.read_be(&dx)?, want.grad_x),
        ("grad_gamma", ctx.read_be(&dgamma)?, ctx.read_be(&dg)?),
        ("grad_beta", ctx.read_be(&dbeta)?, ctx.read_be(&db)?),
    ];
    // Separate calls and one grouped call may sum in another order; they agree to a few
    // roundings of the values involved.
    let tol = 64.0 * ctx.eps();
    for (what, got, want) in pairs {
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            if (a - b).abs() > tol * scale || a.is_nan() != b.is_nan() {
                return fail(format!(
                    "batch_norm with {groups} statistics groups (running_every \
                     {running_every}) differs from one call per group: {what}[{i}] = {a} \
                     against {b}; shape {s:?}"
                ));
            }
        }
    }
    ctx.no_faults("batch_norm statistics groups", case)?;

    // A NaN in group 1, which does not move the running statistics when running_every > 1.
    if running_every > 1 {
        let mut poisoned = x_init.clone();
        poisoned[block] = f32::NAN;
        let x = ctx.be_buf(&poisoned)?;
        let (mut rmean, mut rvar) = (ctx.be_buf(&rm_init)?, ctx.be_buf(&rv_init)?);
        ctx.be
            .batch_norm_forward_train(
                &s,
                BnTrain {
                    x: &x,
                    gamma: &gamma,
                    beta: &beta,
                    y: &mut y,
                    save_mean: &mut smean,
                    save_invstd: &mut sinv,
                    running_mean: &mut rmean,
                    running_var: &mut rvar,
                },
            )
            .or_fail("batch_norm_forward_train with a NaN in a group")?;
        let (got_mean, got_var) = (ctx.read_be(&rmean)?, ctx.read_be(&rvar)?);
        let (want_mean, want_var) = (ctx.read_be(&rm)?, ctx.read_be(&rv)?);
        let same = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
        if !same(&got_mean, &want_mean) || !same(&got_var, &want_var) {
            return fail(format!(
                "batch_norm: a NaN in statistics group 1 (running_every {running_every}) \
                 reached the running statistics: mean {got_mean:?} against {want_mean:?}, \
                 variance {got_var:?} against {want_var:?}; shape {s:?}"
            ));
        }
        let _ = ctx.faults()?;
    }
    Ok(())
}

#[derive(Default)]
struct GroupedResults {
    y: Vec<f64>,
    save_mean: Vec<f64>,
    save_invstd: Vec<f64>,
    grad_x: Vec<f64>,
}

/// This family's shape errors, one of [`super::shape_errors`]'s table: each buffer one element
/// short is `ShapeMismatch`, each listed bad argument `InvalidArgument`, none a panic.
pub(crate) fn shape_errors<B: Backend>(ctx: &Ctx<'_, B>, _case: &ShapeCase) -> Res<()> {
    let (be, z, _, _) = shape_tools(ctx);
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
                be.batch_norm_forward_train(
                    &bs,
                    BnTrain {
                        x: $x,
                        gamma: $g,
                        beta: $b,
                        y: $y,
                        save_mean: $sm,
                        save_invstd: $si,
                        running_mean: $rm,
                        running_var: $rv,
                    },
                )
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
            &zero_eps,
            BnTrain {
                x: &bx,
                gamma: &bc,
                beta: &bc,
                y: &mut my,
                save_mean: &mut c1,
                save_invstd: &mut c2,
                running_mean: &mut c3,
                running_var: &mut c4,
            },
        )
    })?;
    macro_rules! infer {
        ($what:expr, $x:expr, $g:expr, $b:expr, $rm:expr, $rv:expr, $y:expr) => {
            expect($what, Shape, || {
                be.batch_norm_forward_inference(
                    &bs,
                    BnInference {
                        x: $x,
                        gamma: $g,
                        beta: $b,
                        running_mean: $rm,
                        running_var: $rv,
                        y: $y,
                    },
                )
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
                be.batch_norm_backward(
                    &bs,
                    BnBackward {
                        x: $x,
                        grad_y: $dy,
                        gamma: $g,
                        save_mean: $sm,
                        save_invstd: $si,
                        grad_x: $dx,
                        grad_gamma: $dg,
                        grad_beta: $db,
                    },
                )
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
    Ok(())
}
