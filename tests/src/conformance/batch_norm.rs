//! Batch norm: training forward (outputs, saved mean / inverse std, running statistics),
//! inference forward, and backward (dx written, dgamma/dbeta accumulated).

use crate::gen::Gen;
use crate::harness::{Config, Ctx, Factory, FamilyReport, OrFail, Res};
use crate::tol;
use dscl_core::desc::BatchNormShape;
use dscl_core::Backend;
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
            &x.be,
            &gamma.be,
            &beta.be,
            &mut y.be,
            &mut smean.be,
            &mut sinv.be,
            &mut rmean.be,
            &mut rvar.be,
        )
        .or_fail("batch_norm_forward_train")?;
    ctx.rf
        .batch_norm_forward_train(
            s,
            &x.rf,
            &gamma.rf,
            &beta.rf,
            &mut y.rf,
            &mut smean.rf,
            &mut sinv.rf,
            &mut rmean.rf,
            &mut rvar.rf,
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
        .batch_norm_forward_inference(s, &x.be, &gamma.be, &beta.be, &rm.be, &rv.be, &mut yi.be)
        .or_fail("batch_norm_forward_inference")?;
    ctx.rf
        .batch_norm_forward_inference(s, &x.rf, &gamma.rf, &beta.rf, &rm.rf, &rv.rf, &mut yi.rf)
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
            &x.be,
            &dy.be,
            &gamma.be,
            &save_mean.be,
            &save_inv.be,
            &mut dx.be,
            &mut dgamma.be,
            &mut dbeta.be,
        )
        .or_fail("batch_norm_backward")?;
    ctx.rf
        .batch_norm_backward(
            s,
            &x.rf,
            &dy.rf,
            &gamma.rf,
            &save_mean.rf,
            &save_inv.rf,
            &mut dx.rf,
            &mut dgamma.rf,
            &mut dbeta.rf,
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
    ctx.no_faults("batch_norm", case)
}
