//! The fused loss kernels: contrastive_rows (SupCon and DSCL), soft_cross_entropy,
//! softmax_cross_entropy.

use super::rows::{row_stats, rows_desc};
use super::shape_errors::{expect, shape_tools, ShapeCase, Want::Invalid, Want::Shape};
use crate::gen::Gen;
use crate::harness::{Config, Ctx, Factory, FamilyReport, OrFail, Res};
use crate::tol;
use dscl_core::backend::prelude::*;
use dscl_core::desc::{ContrastiveRowsDesc, PositiveWeighting, RowsDesc};
use proptest::prelude::*;
use std::cell::RefCell;

#[derive(Clone, Debug)]
struct ContrastiveCase {
    desc: ContrastiveRowsDesc,
    tau: f64,
    /// Masked logits are NaN and masked labels out of range (else random in-range values).
    poison_mask: bool,
    seed: u64,
}

pub(crate) fn contrastive<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    let wide = cfg.dim(5000, 300);
    let strategy = (
        (
            1..=cfg.dim(8, 4),
            prop_oneof![6 => 0..=cfg.dim(40, 16), 1 => (wide / 5)..=wide],
            any::<bool>(),
            0.0f64..1.0,
        ),
        (0.0f64..1.0, 0.0f64..1.0, 1u32..=6),
        (
            prop_oneof![
                1 => Just(PositiveWeighting::SupCon),
                1 => prop::sample::select(vec![0.0f64, 1.0, 8.0])
                    .prop_map(|beta| PositiveWeighting::Decoupled { beta }),
                1 => (0.0f64..10.0).prop_map(|beta| PositiveWeighting::Decoupled { beta }),
            ],
            prop::sample::select(vec![0.07f64, 0.2, 1.0]),
            prop_oneof![2 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
            any::<bool>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (batch, queue, full, vfrac),
                (ofrac, rfrac, num_classes),
                (weighting, tau, gs_kind, poison_mask, seed),
            )| {
                let cols = 2 * batch + queue;
                let valid_cols = if full {
                    cols
                } else {
                    2 * batch + (queue as f64 * vfrac) as usize
                };
                let row_offset = ((batch as f64) * ofrac) as usize % batch;
                let rows = 1 + (((batch - row_offset - 1) as f64) * rfrac).round() as usize;
                let grad_scale = match gs_kind {
                    0 => 1.0 / batch as f64,
                    1 => 1.0,
                    _ => 0.37,
                };
                ContrastiveCase {
                    desc: ContrastiveRowsDesc {
                        rows,
                        row_offset,
                        batch,
                        cols,
                        valid_cols,
                        num_classes,
                        weighting,
                        grad_scale,
                    },
                    tau,
                    poison_mask,
                    seed,
                }
            },
        );
    case_fn!(Runner, ContrastiveCase, contrastive_case);
    crate::harness::run_family("contrastive", cfg, make, 192, strategy, Runner)
}

fn contrastive_case<B: Backend>(ctx: &Ctx<'_, B>, case: &ContrastiveCase) -> Res<()> {
    let d = &case.desc;
    let mut g = Gen::new(case.seed);
    let eps = ctx.eps();
    let (bsz, cols, valid) = (d.batch, d.cols, d.valid_cols);
    // Labels [y; y; queue]: every anchor's augmented view shares its label; with few samples
    // per class many anchors have the view as their only positive.
    let y: Vec<u32> = (0..bsz)
        .map(|_| g.below(d.num_classes as usize) as u32)
        .collect();
    let mut labels = vec![0u32; cols + g.slack()];
    for j in 0..cols {
        labels[j] = if j < 2 * bsz {
            y[j % bsz]
        } else if j < valid {
            g.below(d.num_classes as usize) as u32
        } else if case.poison_mask {
            // Masked entries are never read: an out-of-range label there is no fault.
            d.num_classes + 7 + g.below(3) as u32
        } else {
            g.below(d.num_classes as usize) as u32
        };
    }
    for l in labels.iter_mut().skip(cols) {
        *l = u32::MAX;
    }
    // Logits s_ij in [-1/tau, 1/tau]; the self column far above (it must be excluded, also
    // from the max); masked columns NaN or large.
    let inv_tau = 1.0 / case.tau;
    let n = d.rows * cols;
    let mut s_init = vec![0.0f32; n + g.slack()];
    for r in 0..d.rows {
        let i = d.row_offset + r;
        for j in 0..cols {
            s_init[r * cols + j] = if j == i {
                (inv_tau + 30.0) as f32
            } else if j >= valid {
                if case.poison_mask {
                    f32::NAN
                } else {
                    (inv_tau + 40.0) as f32
                }
            } else {
                g.uniform(-inv_tau, inv_tau)
            };
        }
    }
    let ln = d.row_offset + d.rows + g.slack();
    let loss_init = g.normal_vec(ln, 1.0);

    let mut logits = ctx.buf(&s_init)?;
    let lab = ctx.idx(&labels)?;
    let mut loss = ctx.buf(&loss_init)?;
    ctx.be
        .contrastive_rows(d, &mut logits.be, &lab.be, &mut loss.be)
        .or_fail("contrastive_rows")?;
    ctx.rf
        .contrastive_rows(d, &mut logits.rf, &lab.rf, &mut loss.rf)
        .or_fail("oracle contrastive_rows")?;

    // Tolerances from host statistics of each anchor's row over A(i) and its positive weights.
    let mut t_grad = vec![0.0; s_init.len()];
    let mut t_loss = vec![0.0; ln];
    for r in 0..d.rows {
        let i = d.row_offset + r;
        let row = &s_init[r * cols..(r + 1) * cols];
        let a = (0..valid).filter(|&j| j != i);
        let st = row_stats(a.clone().map(|j| row[j] as f64));
        let m = a.clone().fold(0.0f64, |m, j| m.max((row[j] as f64).abs()));
        let k = 4.0 * m + tol::growth(st.n) + (st.n as f64).ln();
        let pos: Vec<usize> = a.clone().filter(|&j| labels[j] == labels[i]).collect();
        let view = bsz + i;
        let others = pos.iter().filter(|&&j| j != view).count();
        let weight = |j: usize| -> f64 {
            if !pos.contains(&j) {
                return 0.0;
            }
            match d.weighting {
                PositiveWeighting::SupCon => 1.0 / pos.len() as f64,
                PositiveWeighting::Decoupled { beta } => {
                    let total = if others > 0 { 1.0 + beta } else { 1.0 };
                    if j == view {
                        1.0 / total
                    } else {
                        beta / others as f64 / total
                    }
                }
            }
        };
        t_loss[i] = tol::LOSS * eps * k;
        for j in a {
            let p = (row[j] as f64 - st.lse).exp();
            t_grad[r * cols + j] = d.grad_scale.abs() * tol::LOSS * eps * (p * k + weight(j));
        }
    }
    let desc = (case, &labels[..cols]);
    ctx.check(
        "contrastive_rows",
        "gradient (logits)",
        &desc,
        &[d.rows, cols],
        &logits,
        &t_grad,
    )?;
    ctx.check("contrastive_rows", "loss", &desc, &[ln], &loss, &t_loss)?;
    ctx.no_faults("contrastive_rows", &desc)
}

#[derive(Clone, Debug)]
struct CeCase {
    desc: RowsDesc,
    scale: f64,
    nan_mask: bool,
    /// Soft targets: 0 a softmax (sums to 1), 1 unnormalised non-negative with zeros.
    target_kind: u8,
    grad_scale: f64,
    seed: u64,
}

pub(crate) fn cross_entropy<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    let strategy = (
        rows_desc(cfg.dim(12, 4), cfg.dim(300, 64), cfg.dim(5000, 256)),
        prop::sample::select(vec![1.0f64, 5.0, 1.0 / 0.07]),
        0u8..=1,
        prop::sample::select(vec![1.0f64, 0.25, -0.5]),
        any::<u64>(),
    )
        .prop_map(
            |((desc, nan_mask), scale, target_kind, grad_scale, seed)| CeCase {
                desc,
                scale,
                nan_mask,
                target_kind,
                grad_scale,
                seed,
            },
        );
    case_fn!(Runner, CeCase, ce_case);
    crate::harness::run_family("cross_entropy", cfg, make, 128, strategy, Runner)
}

fn ce_case<B: Backend>(ctx: &Ctx<'_, B>, case: &CeCase) -> Res<()> {
    let d = &case.desc;
    let mut g = Gen::new(case.seed);
    let eps = ctx.eps();
    let (rows, cols, valid) = (d.rows, d.cols, d.valid_cols);
    let n = d.len();
    let dims = [rows, cols];
    let masked = |g: &mut Gen| {
        if case.nan_mask {
            f32::NAN
        } else {
            g.uniform(-1.0, 1.0) * 1.0e3
        }
    };
    let sl = g.slack();
    let mut x_init = g.normal_vec(n + sl, case.scale);
    let mut t_init = vec![0.0f32; n + g.slack()];
    for r in 0..rows {
        let raw: Vec<f64> = (0..valid).map(|_| g.normal() as f64 * case.scale).collect();
        let mx = raw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = raw.iter().map(|v| (v - mx).exp()).sum();
        for c in 0..cols {
            let i = r * cols + c;
            if c >= valid {
                x_init[i] = masked(&mut g);
                t_init[i] = masked(&mut g);
            } else if case.target_kind == 0 {
                t_init[i] = ((raw[c] - mx).exp() / z) as f32;
            } else {
                t_init[i] = if g.chance(0.3) {
                    0.0
                } else {
                    g.uniform(0.0, 2.0)
                };
            }
        }
    }
    let stats: Vec<_> = (0..rows)
        .map(|r| row_stats(x_init[r * cols..r * cols + valid].iter().map(|v| *v as f64)))
        .collect();

    // ---- soft cross-entropy ----
    let mut logits = ctx.buf(&x_init)?;
    let targets = ctx.buf(&t_init)?;
    let ln = rows + g.slack();
    let mut loss = ctx.buf(&g.poison(ln))?;
    ctx.be
        .soft_cross_entropy(
            d,
            case.grad_scale,
            &mut logits.be,
            &targets.be,
            &mut loss.be,
        )
        .or_fail("soft_cross_entropy")?;
    ctx.rf
        .soft_cross_entropy(
            d,
            case.grad_scale,
            &mut logits.rf,
            &targets.rf,
            &mut loss.rf,
        )
        .or_fail("oracle soft_cross_entropy")?;
    let mut t_grad = vec![0.0; x_init.len()];
    let mut t_loss = vec![0.0; ln];
    for (r, st) in stats.iter().enumerate() {
        let row = r * cols..r * cols + valid;
        let k = st.max.abs() + st.lse.abs() + tol::growth(st.n) + st.mean_abs_z;
        let tsum: f64 = row.clone().map(|i| (t_init[i] as f64).abs()).sum();
        let mut l = 0.0;
        let mut terms = 0.0;
        for i in row.clone() {
            let x = x_init[i] as f64;
            let ta = (t_init[i] as f64).abs();
            l += ta * (x.abs() + k);
            terms += ta * (st.lse - x).abs();
            let q = (x - st.lse).exp();
            // q below the smallest normal number may flush to 0 before it is multiplied by
            // sum(targets): an absolute error of up to MIN_POSITIVE * sum(targets).
            t_grad[i] = case.grad_scale.abs()
                * (tol::LOSS * eps * (q * tsum * (k + (x - st.max).abs()) + ta)
                    + tol::UNDERFLOW_FLOOR * ctx.tiny() * tsum);
        }
        t_loss[r] = tol::LOSS * eps * (l + tol::growth(st.n) * terms);
    }
    ctx.check(
        "soft_cross_entropy",
        "gradient (logits)",
        case,
        &dims,
        &logits,
        &t_grad,
    )?;
    ctx.check("soft_cross_entropy", "loss", case, &[rows], &loss, &t_loss)?;
    ctx.no_faults("soft_cross_entropy", case)?;

    // ---- hard-label softmax cross-entropy ----
    let labels: Vec<u32> = (0..rows + g.slack())
        .map(|r| {
            if r < rows {
                g.below(valid) as u32
            } else {
                u32::MAX
            }
        })
        .collect();
    let mut logits = ctx.buf(&x_init)?;
    let lab = ctx.idx(&labels)?;
    let mut loss = ctx.buf(&g.poison(ln))?;
    ctx.be
        .softmax_cross_entropy(d, case.grad_scale, &mut logits.be, &lab.be, &mut loss.be)
        .or_fail("softmax_cross_entropy")?;
    ctx.rf
        .softmax_cross_entropy(d, case.grad_scale, &mut logits.rf, &lab.rf, &mut loss.rf)
        .or_fail("oracle softmax_cross_entropy")?;
    let mut t_grad = vec![0.0; x_init.len()];
    let mut t_loss = vec![0.0; ln];
    for (r, st) in stats.iter().enumerate() {
        let k = st.max.abs() + st.lse.abs() + tol::growth(st.n) + st.mean_abs_z;
        let xl = x_init[r * cols + labels[r] as usize] as f64;
        t_loss[r] = tol::LOSS * eps * (k + xl.abs());
        for c in 0..valid {
            let i = r * cols + c;
            let x = x_init[i] as f64;
            let p = (x - st.lse).exp();
            let onehot = if c == labels[r] as usize { 1.0 } else { 0.0 };
            t_grad[i] =
                case.grad_scale.abs() * tol::LOSS * eps * (p * (k + (x - st.max).abs()) + onehot);
        }
    }
    let desc = (case, &labels[..rows]);
    ctx.check(
        "softmax_cross_entropy",
        "gradient (logits)",
        &desc,
        &dims,
        &logits,
        &t_grad,
    )?;
    ctx.check(
        "softmax_cross_entropy",
        "loss",
        &desc,
        &[rows],
        &loss,
        &t_loss,
    )?;
    ctx.no_faults("softmax_cross_entropy", &desc)
}

/// This family's shape errors, one of [`super::shape_errors`]'s table: each buffer one element
/// short is `ShapeMismatch`, each listed bad argument `InvalidArgument`, none a panic.
pub(crate) fn shape_errors<B: Backend>(ctx: &Ctx<'_, B>, _case: &ShapeCase) -> Res<()> {
    let (be, z, zi, _) = shape_tools(ctx);
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
    Ok(())
}
