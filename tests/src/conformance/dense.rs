//! gemm (every transpose combination, alpha/beta, beta = 0 over NaN, padded leading dimensions,
//! offsets, strided and broadcast batches) and the linear layer's bias kernels.

use super::shape_errors::{expect, shape_tools, ShapeCase, Want::Invalid, Want::Shape};
use crate::gen::Gen;
use crate::harness::{Config, Ctx, Factory, FamilyReport, OrFail, Res};
use crate::tol;
use dscl_core::backend::prelude::*;
use dscl_core::desc::{GemmDesc, MatrixLayout};
use proptest::prelude::*;
use std::cell::RefCell;

#[derive(Clone, Debug)]
struct GemmCase {
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    /// 0: 1, 1: random, 2: -0.5, 3: 0
    alpha_kind: u8,
    /// 0: 0 (C poisoned with NaN), 1: 1, 2: random
    beta_kind: u8,
    batch: usize,
    /// Extra leading-dimension elements of A, B, C.
    ld_extra: (usize, usize, usize),
    offsets: (usize, usize, usize),
    /// Batch-stride kind of A and B: 0 tight, 1 padded, 2 broadcast (stride 0).
    stride_kind: (u8, u8),
    c_stride_extra: usize,
    seed: u64,
}

pub(crate) fn gemm<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    let big_mn = cfg.dim(96, 40);
    let big_k = cfg.dim(320, 48);
    let dim = move |big: usize| {
        prop_oneof![
            12 => 1..=24usize,
            4 => 25..=big,
            1 => big..=2 * big,
        ]
    };
    let strategy = (
        (
            dim(big_mn),
            dim(big_mn),
            dim(big_k),
            any::<bool>(),
            any::<bool>(),
        ),
        (
            0u8..=3,
            prop_oneof![2 => Just(0u8), 1 => 1u8..=2],
            prop_oneof![3 => Just(1usize), 1 => 2usize..=3],
        ),
        (
            (0usize..=3, 0usize..=3, 0usize..=3),
            (0usize..=7, 0usize..=7, 0usize..=7),
            (
                prop_oneof![2 => 0u8..=1, 1 => Just(2u8)],
                prop_oneof![2 => 0u8..=1, 1 => Just(2u8)],
            ),
            0usize..=5,
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (m, n, k, trans_a, trans_b),
                (alpha_kind, beta_kind, batch),
                (ld_extra, offsets, stride_kind, c_stride_extra, seed),
            )| GemmCase {
                m,
                n,
                k,
                trans_a,
                trans_b,
                alpha_kind,
                beta_kind,
                batch,
                ld_extra,
                offsets,
                stride_kind,
                c_stride_extra,
                seed,
            },
        );
    case_fn!(Runner, GemmCase, gemm_case);
    crate::harness::run_family("gemm", cfg, make, 256, strategy, Runner)
}

/// Layout of one operand stored as `rows x cols` per batch entry.
fn layout(
    rows: usize,
    cols: usize,
    ld_extra: usize,
    offset: usize,
    kind: u8,
    extra: usize,
) -> (MatrixLayout, usize) {
    let ld = cols + ld_extra;
    let span = (rows - 1) * ld + cols;
    let stride = match kind {
        0 => span,
        1 => span + extra,
        _ => 0,
    };
    (MatrixLayout::strided(offset, ld, stride), span)
}

fn gemm_case<B: Backend>(ctx: &Ctx<'_, B>, case: &GemmCase) -> Res<()> {
    let mut g = Gen::new(case.seed);
    let eps = ctx.eps();
    let (m, n, k, batch) = (case.m, case.n, case.k, case.batch);
    let alpha = match case.alpha_kind {
        0 => 1.0,
        1 => g.uniform(-2.0, 2.0) as f64,
        2 => -0.5,
        _ => 0.0,
    };
    let beta = match case.beta_kind {
        0 => 0.0,
        1 => 1.0,
        _ => g.uniform(-2.0, 2.0) as f64,
    };
    let (ar, ac) = if case.trans_a { (k, m) } else { (m, k) };
    let (br, bc) = if case.trans_b { (n, k) } else { (k, n) };
    let (la, span_a) = layout(
        ar,
        ac,
        case.ld_extra.0,
        case.offsets.0,
        case.stride_kind.0,
        1 + g.below(4),
    );
    let (lb, span_b) = layout(
        br,
        bc,
        case.ld_extra.1,
        case.offsets.1,
        case.stride_kind.1,
        1 + g.below(4),
    );
    let (lc, span_c) = layout(
        m,
        n,
        case.ld_extra.2,
        case.offsets.2,
        1,
        case.c_stride_extra,
    );
    let a_len = la.offset + (batch - 1) * la.batch_stride + span_a + g.slack();
    let b_len = lb.offset + (batch - 1) * lb.batch_stride + span_b + g.slack();
    let c_len = lc.offset + (batch - 1) * lc.batch_stride + span_c + g.slack();
    let desc = GemmDesc {
        m,
        n,
        k,
        trans_a: case.trans_a,
        trans_b: case.trans_b,
        alpha,
        beta,
        batch,
        a: la,
        b: lb,
        c: lc,
    };

    let a_init = g.normal_vec(a_len, 1.0);
    let b_init = g.normal_vec(b_len, 1.0);
    // beta = 0: C must be written without being read, so a NaN there must not propagate.
    let c_init = if beta == 0.0 {
        vec![f32::NAN; c_len]
    } else {
        g.normal_vec(c_len, 1.0)
    };
    let a = ctx.buf(&a_init)?;
    let b = ctx.buf(&b_init)?;
    let mut c = ctx.buf(&c_init)?;
    ctx.be
        .gemm(&desc, &a.be, &b.be, &mut c.be)
        .or_fail("gemm")?;
    ctx.rf
        .gemm(&desc, &a.rf, &b.rf, &mut c.rf)
        .or_fail("oracle gemm")?;

    // Magnitudes: |alpha| |A| |B| + |beta| |C| through the oracle.
    let abs = |v: &[f32]| -> Vec<f32> {
        v.iter()
            .map(|x| if x.is_nan() { 0.0 } else { x.abs() })
            .collect()
    };
    let mag_desc = GemmDesc {
        alpha: alpha.abs(),
        beta: beta.abs(),
        ..desc
    };
    let (aa, ba) = (ctx.buf(&abs(&a_init))?, ctx.buf(&abs(&b_init))?);
    let mut ca = ctx.buf(&abs(&c_init))?;
    ctx.rf
        .gemm(&mag_desc, &aa.rf, &ba.rf, &mut ca.rf)
        .or_fail("oracle gemm (magnitudes)")?;
    let mag = ctx.read_rf(&ca.rf)?;
    let mut t = vec![0.0; c_len];
    let scale = tol::GEMM * eps * tol::growth(k);
    for bt in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let idx = lc.offset + bt * lc.batch_stride + i * lc.ld + j;
                t[idx] = scale * mag[idx];
            }
        }
    }
    let locate = |idx: usize| -> String {
        for bt in 0..batch {
            let start = lc.offset + bt * lc.batch_stride;
            if idx >= start && idx < start + span_c {
                let (i, j) = ((idx - start) / lc.ld, (idx - start) % lc.ld);
                if j < n {
                    return format!("batch {bt}, row {i}, col {j} of C");
                }
            }
        }
        "outside C's matrices: must be left untouched".to_string()
    };
    let got = ctx.read_be(&c.be)?;
    let exp = ctx.read_rf(&c.rf)?;
    ctx.check_located(
        "gemm",
        "c",
        &(case, &desc),
        &[],
        Some(&locate),
        &got,
        &exp,
        &t,
    )?;
    ctx.no_faults("gemm", case)
}

#[derive(Clone, Debug)]
struct BiasCase {
    rows: usize,
    cols: usize,
    seed: u64,
}

pub(crate) fn bias<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    let rows = prop_oneof![4 => 1..=cfg.dim(96, 16), 1 => cfg.dim(200, 16)..=cfg.dim(400, 32)];
    let strategy = (rows, 1..=cfg.dim(200, 24), any::<u64>())
        .prop_map(|(rows, cols, seed)| BiasCase { rows, cols, seed });
    case_fn!(Runner, BiasCase, bias_case);
    crate::harness::run_family("bias", cfg, make, 96, strategy, Runner)
}

fn bias_case<B: Backend>(ctx: &Ctx<'_, B>, case: &BiasCase) -> Res<()> {
    let mut g = Gen::new(case.seed);
    let eps = ctx.eps();
    let (rows, cols) = (case.rows, case.cols);
    let dims = [rows, cols];

    // bias_add: x[r][c] += bias[c]
    let n = rows * cols + g.slack();
    let xi = g.normal_vec(n, 2.0);
    let sl = g.slack();
    let bi = g.normal_vec(cols + sl, 1.0);
    let mut x = ctx.buf(&xi)?;
    let bias = ctx.buf(&bi)?;
    ctx.be
        .bias_add(&mut x.be, &bias.be, rows, cols)
        .or_fail("bias_add")?;
    ctx.rf
        .bias_add(&mut x.rf, &bias.rf, rows, cols)
        .or_fail("oracle bias_add")?;
    let t: Vec<f64> = (0..n)
        .map(|e| {
            if e < rows * cols {
                tol::ELEMENTWISE * eps * ((xi[e] as f64).abs() + (bi[e % cols] as f64).abs())
            } else {
                0.0
            }
        })
        .collect();
    ctx.check("bias_add", "x", case, &dims, &x, &t)?;

    // bias_backward: grad_bias[c] += sum_r grad_out[r][c] (accumulates onto random values).
    let sl = g.slack();
    let go = g.normal_vec(rows * cols + sl, 1.0);
    let nb = cols + g.slack();
    let gb0 = g.normal_vec(nb, 1.0);
    let grad_out = ctx.buf(&go)?;
    let mut gb = ctx.buf(&gb0)?;
    ctx.be
        .bias_backward(&grad_out.be, &mut gb.be, rows, cols)
        .or_fail("bias_backward")?;
    ctx.rf
        .bias_backward(&grad_out.rf, &mut gb.rf, rows, cols)
        .or_fail("oracle bias_backward")?;
    let t: Vec<f64> = (0..nb)
        .map(|c| {
            if c < cols {
                let s: f64 = (0..rows).map(|r| (go[r * cols + c] as f64).abs()).sum();
                tol::REDUCTION * eps * tol::growth(rows) * ((gb0[c] as f64).abs() + s)
            } else {
                0.0
            }
        })
        .collect();
    ctx.check("bias_backward", "grad_bias", case, &[cols], &gb, &t)?;
    ctx.no_faults("bias", case)
}

/// This family's shape errors, one of [`super::shape_errors`]'s table: each buffer one element
/// short is `ShapeMismatch`, each listed bad argument `InvalidArgument`, none a panic.
pub(crate) fn shape_errors<B: Backend>(ctx: &Ctx<'_, B>, case: &ShapeCase) -> Res<()> {
    let (be, z, _, _) = shape_tools(ctx);
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
    Ok(())
}
