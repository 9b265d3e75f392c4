//! fill, copy, scale, axpy, add, sum: against the oracle, elements outside the range exact.

use super::shape_errors::{expect, shape_tools, ShapeCase, Want::Shape};
use crate::gen::Gen;
use crate::harness::{Config, Ctx, Factory, FamilyReport, OrFail, Res};
use crate::tol;
use dscl_core::backend::prelude::*;
use proptest::prelude::*;
use std::cell::RefCell;

#[derive(Clone, Debug)]
struct Case {
    len: usize,
    offset: usize,
    /// 0: random in [-3, 3], 1: 0, 2: 1, 3: -1, 4: tiny (1e-3)
    alpha_kind: u8,
    seed: u64,
}

fn scalar(kind: u8, g: &mut Gen) -> f64 {
    match kind {
        1 => 0.0,
        2 => 1.0,
        3 => -1.0,
        4 => 1.0e-3,
        _ => g.uniform(-3.0, 3.0) as f64 * 1.000_000_1,
    }
}

pub(crate) fn run<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    let max = cfg.dim(3000, 300);
    let strategy = (
        prop_oneof![
            6 => 0..=64usize,
            4 => 0..=max,
            1 => cfg.dim(40_000, 300)..=cfg.dim(120_000, 2000),
        ],
        0usize..=16,
        prop_oneof![4 => Just(0u8), 1 => 1u8..=4],
        any::<u64>(),
    )
        .prop_map(|(len, offset, alpha_kind, seed)| Case {
            len,
            offset,
            alpha_kind,
            seed,
        });
    case_fn!(Runner, Case, run_case);
    crate::harness::run_family("elementwise", cfg, make, 128, strategy, Runner)
}

fn run_case<B: Backend>(ctx: &Ctx<'_, B>, case: &Case) -> Res<()> {
    let mut g = Gen::new(case.seed);
    let eps = ctx.eps();
    let len = case.len;
    let alpha = scalar(case.alpha_kind, &mut g);

    // fill(x, offset, len, value)
    {
        let n = case.offset + len + g.slack();
        let init = g.normal_vec(n, 1.0);
        let mut x = ctx.buf(&init)?;
        ctx.be
            .fill(&mut x.be, case.offset, len, alpha)
            .or_fail("fill")?;
        ctx.rf
            .fill(&mut x.rf, case.offset, len, alpha)
            .or_fail("oracle fill")?;
        let t: Vec<f64> = (0..n)
            .map(|e| {
                if e >= case.offset && e < case.offset + len {
                    tol::ELEMENTWISE * eps * alpha.abs()
                } else {
                    0.0
                }
            })
            .collect();
        ctx.check("fill", "x", &(case, alpha), &[n], &x, &t)?;
    }

    // copy(src, so, dst, do, len): exact.
    {
        let so = g.below(8);
        let dofs = g.below(8);
        let sl = g.slack();
        let src_init = g.normal_vec(so + len + sl, 1.0);
        let dst_n = dofs + len + g.slack();
        let dst_init = g.normal_vec(dst_n, 1.0);
        let src = ctx.buf(&src_init)?;
        let mut dst = ctx.buf(&dst_init)?;
        ctx.be
            .copy(&src.be, so, &mut dst.be, dofs, len)
            .or_fail("copy")?;
        ctx.rf
            .copy(&src.rf, so, &mut dst.rf, dofs, len)
            .or_fail("oracle copy")?;
        let desc = format!("{case:?}, src_offset {so}, dst_offset {dofs}");
        ctx.check("copy", "dst", &desc, &[dst_n], &dst, &vec![0.0; dst_n])?;
    }

    // scale(x, len, alpha): x[e] *= alpha for e < len; the rest untouched.
    {
        let n = len + g.slack();
        let init = g.normal_vec(n, 2.0);
        let mut x = ctx.buf(&init)?;
        ctx.be.scale(&mut x.be, len, alpha).or_fail("scale")?;
        ctx.rf
            .scale(&mut x.rf, len, alpha)
            .or_fail("oracle scale")?;
        let t: Vec<f64> = (0..n)
            .map(|e| {
                if e < len {
                    tol::ELEMENTWISE * eps * (init[e] as f64 * alpha).abs()
                } else {
                    0.0
                }
            })
            .collect();
        ctx.check("scale", "x", &(case, alpha), &[n], &x, &t)?;
    }

    // axpy(alpha, x, y, len)
    {
        let sl = g.slack();
        let xi = g.normal_vec(len + sl, 2.0);
        let n = len + g.slack();
        let yi = g.normal_vec(n, 2.0);
        let x = ctx.buf(&xi)?;
        let mut y = ctx.buf(&yi)?;
        ctx.be.axpy(alpha, &x.be, &mut y.be, len).or_fail("axpy")?;
        ctx.rf
            .axpy(alpha, &x.rf, &mut y.rf, len)
            .or_fail("oracle axpy")?;
        let t: Vec<f64> = (0..n)
            .map(|e| {
                if e < len {
                    tol::ELEMENTWISE * eps * ((yi[e] as f64).abs() + (alpha * xi[e] as f64).abs())
                } else {
                    0.0
                }
            })
            .collect();
        ctx.check("axpy", "y", &(case, alpha), &[n], &y, &t)?;
    }

    // add(a, b, out, len): out written, not read.
    {
        let sl = g.slack();
        let ai = g.normal_vec(len + sl, 2.0);
        let sl = g.slack();
        let bi = g.normal_vec(len + sl, 2.0);
        let n = len + g.slack();
        let oi = g.poison(n);
        let a = ctx.buf(&ai)?;
        let b = ctx.buf(&bi)?;
        let mut out = ctx.buf(&oi)?;
        ctx.be.add(&a.be, &b.be, &mut out.be, len).or_fail("add")?;
        ctx.rf
            .add(&a.rf, &b.rf, &mut out.rf, len)
            .or_fail("oracle add")?;
        let t: Vec<f64> = (0..n)
            .map(|e| {
                if e < len {
                    tol::ELEMENTWISE * eps * ((ai[e] as f64).abs() + (bi[e] as f64).abs())
                } else {
                    0.0
                }
            })
            .collect();
        ctx.check("add", "out", case, &[n], &out, &t)?;
    }

    // sum(x, len, scale, out, offset): only out[offset] is written.
    {
        let sl = g.slack();
        let xi = g.normal_vec(len + sl, 1.0);
        let n = case.offset + 1 + g.slack();
        let oi = g.poison(n);
        let x = ctx.buf(&xi)?;
        let mut out = ctx.buf(&oi)?;
        ctx.be
            .sum(&x.be, len, alpha, &mut out.be, case.offset)
            .or_fail("sum")?;
        ctx.rf
            .sum(&x.rf, len, alpha, &mut out.rf, case.offset)
            .or_fail("oracle sum")?;
        let abs_sum: f64 = xi[..len].iter().map(|v| (*v as f64).abs()).sum();
        let mut t = vec![0.0; n];
        t[case.offset] = tol::SUM * eps * tol::growth_pairwise(len) * alpha.abs() * abs_sum;
        ctx.check("sum", "out", &(case, alpha), &[n], &out, &t)?;
    }
    ctx.no_faults("elementwise", case)
}

/// This family's shape errors, one of [`super::shape_errors`]'s table: each buffer one element
/// short is `ShapeMismatch`, each listed bad argument `InvalidArgument`, none a panic.
pub(crate) fn shape_errors<B: Backend>(ctx: &Ctx<'_, B>, _case: &ShapeCase) -> Res<()> {
    let (be, z, zi, _) = shape_tools(ctx);
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
    Ok(())
}
