//! Row kernels: l2_normalize forward/backward, row_softmax and row_logsumexp with masked
//! columns (`valid_cols < cols`, masked inputs NaN half the time: they must be ignored).

use super::shape_errors::{expect, shape_tools, ShapeCase, Want::Invalid, Want::Shape};
use crate::gen::Gen;
use crate::harness::{Config, Ctx, Factory, FamilyReport, OrFail, Res};
use crate::tol;
use dscl_core::backend::prelude::*;
use dscl_core::desc::RowsDesc;
use proptest::prelude::*;
use std::cell::RefCell;

#[derive(Clone, Debug)]
struct L2Case {
    rows: usize,
    cols: usize,
    /// Overall scale of x: 1e-3, 1 or 100.
    scale: f64,
    seed: u64,
}

pub(crate) fn l2_normalize<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    let strategy = (
        1..=cfg.dim(20, 6),
        prop_oneof![4 => 1..=cfg.dim(300, 64), 1 => cfg.dim(1000, 100)..=cfg.dim(2048, 128)],
        prop::sample::select(vec![1e-3f64, 1.0, 100.0]),
        any::<u64>(),
    )
        .prop_map(|(rows, cols, scale, seed)| L2Case {
            rows,
            cols,
            scale,
            seed,
        });
    case_fn!(Runner, L2Case, l2_case);
    crate::harness::run_family("l2_normalize", cfg, make, 96, strategy, Runner)
}

fn l2_case<B: Backend>(ctx: &Ctx<'_, B>, case: &L2Case) -> Res<()> {
    let mut g = Gen::new(case.seed);
    let eps = ctx.eps();
    let (rows, cols) = (case.rows, case.cols);
    let dims = [rows, cols];
    let n = rows * cols;
    let sl = g.slack();
    let x_init = g.normal_vec(n + sl, case.scale);
    let x = ctx.buf(&x_init)?;
    let yn = n + g.slack();
    let mut y = ctx.buf(&g.poison(yn))?;
    let nn = rows + g.slack();
    let mut norms = ctx.buf(&g.poison(nn))?;
    ctx.be
        .l2_normalize_forward(&x.be, &mut y.be, &mut norms.be, rows, cols)
        .or_fail("l2_normalize_forward")?;
    ctx.rf
        .l2_normalize_forward(&x.rf, &mut y.rf, &mut norms.rf, rows, cols)
        .or_fail("oracle l2_normalize_forward")?;
    let k = tol::ROWS * eps * tol::growth(cols);
    let exp_y = ctx.read_rf(&y.rf)?;
    let exp_n = ctx.read_rf(&norms.rf)?;
    let t: Vec<f64> = (0..yn)
        .map(|i| if i < n { k * exp_y[i].abs() } else { 0.0 })
        .collect();
    ctx.check("l2_normalize_forward", "y", case, &dims, &y, &t)?;
    let t: Vec<f64> = (0..nn)
        .map(|r| if r < rows { k * exp_n[r].abs() } else { 0.0 })
        .collect();
    ctx.check("l2_normalize_forward", "norms", case, &[rows], &norms, &t)?;
    ctx.no_faults("l2_normalize_forward", case)?;

    // backward on the oracle's y and norms (rounded to f32) for both sides.
    let y32 = ctx.oracle_f32(&y)?;
    let n32 = ctx.oracle_f32(&norms)?;
    let yb = ctx.buf(&y32)?;
    let nb = ctx.buf(&n32)?;
    let sl = g.slack();
    let gy_init = g.normal_vec(n + sl, 1.0);
    let gy = ctx.buf(&gy_init)?;
    let mut gx = ctx.buf(&g.poison(yn))?;
    ctx.be
        .l2_normalize_backward(&yb.be, &nb.be, &gy.be, &mut gx.be, rows, cols)
        .or_fail("l2_normalize_backward")?;
    ctx.rf
        .l2_normalize_backward(&yb.rf, &nb.rf, &gy.rf, &mut gx.rf, rows, cols)
        .or_fail("oracle l2_normalize_backward")?;
    let mut t = vec![0.0; yn];
    for r in 0..rows {
        let row = r * cols..(r + 1) * cols;
        let dot: f64 = row
            .clone()
            .map(|i| (y32[i] as f64 * gy_init[i] as f64).abs())
            .sum();
        for i in row {
            t[i] = k * ((gy_init[i] as f64).abs() + (y32[i] as f64).abs() * dot) / n32[r] as f64;
        }
    }
    ctx.check("l2_normalize_backward", "grad_x", case, &dims, &gx, &t)?;
    ctx.no_faults("l2_normalize_backward", case)
}

#[derive(Clone, Debug)]
struct SoftmaxCase {
    desc: RowsDesc,
    /// Logit scale: 1, 5 or 1/0.07.
    scale: f64,
    /// Masked inputs are NaN (else random).
    nan_mask: bool,
    seed: u64,
}

/// A rows desc with `valid_cols` all of `cols` half the time.
pub(crate) fn rows_desc(
    max_rows: usize,
    max_cols: usize,
    wide: usize,
) -> impl Strategy<Value = (RowsDesc, bool)> {
    (
        1..=max_rows,
        prop_oneof![5 => 1..=max_cols, 1 => (wide / 5).max(max_cols + 1)..=wide.max(max_cols + 1)],
        any::<bool>(),
        0.0f64..1.0,
        any::<bool>(),
    )
        .prop_map(|(rows, cols, full, frac, nan_mask)| {
            let valid_cols = if full {
                cols
            } else {
                1 + ((cols - 1) as f64 * frac) as usize
            };
            (
                RowsDesc {
                    rows,
                    cols,
                    valid_cols,
                },
                nan_mask,
            )
        })
}

pub(crate) fn softmax<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    let strategy = (
        rows_desc(cfg.dim(12, 4), cfg.dim(400, 64), cfg.dim(5000, 256)),
        prop::sample::select(vec![1.0f64, 5.0, 1.0 / 0.07]),
        any::<u64>(),
    )
        .prop_map(|((desc, nan_mask), scale, seed)| SoftmaxCase {
            desc,
            scale,
            nan_mask,
            seed,
        });
    case_fn!(Runner, SoftmaxCase, softmax_case);
    crate::harness::run_family("row_softmax", cfg, make, 128, strategy, Runner)
}

/// Per-row host statistics over the valid columns, in f64: max, log-sum-exp, E_p|x - max|.
pub(crate) struct RowStats {
    pub max: f64,
    pub lse: f64,
    pub mean_abs_z: f64,
    pub n: usize,
}

pub(crate) fn row_stats(vals: impl Iterator<Item = f64> + Clone) -> RowStats {
    let max = vals.clone().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = vals.clone().map(|v| (v - max).exp()).sum();
    let lse = max + sum.ln();
    let mean_abs_z = vals
        .clone()
        .map(|v| (v - lse).exp() * (v - max).abs())
        .sum::<f64>();
    RowStats {
        max,
        lse,
        mean_abs_z,
        n: vals.count(),
    }
}

fn softmax_case<B: Backend>(ctx: &Ctx<'_, B>, case: &SoftmaxCase) -> Res<()> {
    let d = &case.desc;
    let mut g = Gen::new(case.seed);
    let eps = ctx.eps();
    let n = d.len();
    let sl = g.slack();
    let mut x_init = g.normal_vec(n + sl, case.scale);
    for r in 0..d.rows {
        for c in d.valid_cols..d.cols {
            x_init[r * d.cols + c] = if case.nan_mask {
                f32::NAN
            } else {
                1.0e4 // would dominate every row if it were not masked
            };
        }
    }
    let stats: Vec<RowStats> = (0..d.rows)
        .map(|r| {
            row_stats(
                x_init[r * d.cols..r * d.cols + d.valid_cols]
                    .iter()
                    .map(|v| *v as f64),
            )
        })
        .collect();
    let x = ctx.buf(&x_init)?;
    let yn = n + g.slack();
    let mut y = ctx.buf(&g.poison(yn))?;
    ctx.be
        .row_softmax(d, &x.be, &mut y.be)
        .or_fail("row_softmax")?;
    ctx.rf
        .row_softmax(d, &x.rf, &mut y.rf)
        .or_fail("oracle row_softmax")?;
    let exp_y = ctx.read_rf(&y.rf)?;
    let mut t = vec![0.0; yn];
    for (r, st) in stats.iter().enumerate() {
        for c in 0..d.valid_cols {
            let i = r * d.cols + c;
            let z = (x_init[i] as f64 - st.max).abs();
            t[i] = tol::ROWS * eps * (tol::growth(st.n) + z + st.mean_abs_z) * exp_y[i].abs();
        }
    }
    ctx.check("row_softmax", "y", case, &[d.rows, d.cols], &y, &t)?;
    ctx.no_faults("row_softmax", case)?;

    let on = d.rows + g.slack();
    let mut out = ctx.buf(&g.poison(on))?;
    ctx.be
        .row_logsumexp(d, &x.be, &mut out.be)
        .or_fail("row_logsumexp")?;
    ctx.rf
        .row_logsumexp(d, &x.rf, &mut out.rf)
        .or_fail("oracle row_logsumexp")?;
    let mut t = vec![0.0; on];
    for (r, st) in stats.iter().enumerate() {
        t[r] = tol::ROWS * eps * (st.max.abs() + st.lse.abs() + tol::growth(st.n) + st.mean_abs_z);
    }
    ctx.check("row_logsumexp", "out", case, &[d.rows], &out, &t)?;
    ctx.no_faults("row_logsumexp", case)
}

/// This family's shape errors, one of [`super::shape_errors`]'s table: each buffer one element
/// short is `ShapeMismatch`, each listed bad argument `InvalidArgument`, none a panic.
pub(crate) fn shape_errors<B: Backend>(ctx: &Ctx<'_, B>, _case: &ShapeCase) -> Res<()> {
    let (be, z, zi, _) = shape_tools(ctx);
    let (x11, x12) = (z(11)?, z(12)?);
    let (mut m11, mut m12) = (z(11)?, z(12)?);
    let mut y3 = z(3)?;
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
    Ok(())
}
