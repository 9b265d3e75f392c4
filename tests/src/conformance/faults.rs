//! The fault slot: each kernel that records value faults records the documented kind and index
//! (and the label for `LabelOutOfRange`), the first fault wins, and `take_fault` clears.
//! Every expectation is checked on the oracle too, so a disagreement says which side is off.

use crate::gen::Gen;
use crate::harness::{fail, Config, Ctx, Dual, Factory, FamilyReport, OrFail, Res};
use crate::tol;
use dscl_core::backend::prelude::*;
use dscl_core::desc::{ContrastiveRowsDesc, PoolShape, PositiveWeighting, RoiAlignShape, RowsDesc};
use dscl_core::{Backend, Element, Fault, FaultKind};
use proptest::prelude::*;
use std::cell::RefCell;

#[derive(Clone, Debug)]
struct Case {
    rows: usize,
    cols: usize,
    bad_row: usize,
    bad_col: usize,
    /// 0 NaN, 1 +inf, 2 -inf
    bad_kind: u8,
    seed: u64,
}

pub(crate) fn run<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    // One case in four has rows long enough (> 32k elements) for a parallel backend to split.
    let cols = prop_oneof![3 => 2usize..=48, 1 => cfg.dim(6000, 48)..=cfg.dim(20_000, 64)];
    let strategy = (
        2usize..=6,
        cols,
        0.0f64..1.0,
        0.0f64..1.0,
        0u8..=2,
        any::<u64>(),
    )
        .prop_map(|(rows, cols, fr, fc, bad_kind, seed)| Case {
            rows,
            cols,
            bad_row: ((rows as f64) * fr) as usize % rows,
            bad_col: ((cols as f64) * fc) as usize % cols,
            bad_kind,
            seed,
        });
    case_fn!(Runner, Case, run_case);
    crate::harness::run_family("faults", cfg, make, 64, strategy, Runner)
}

fn fault(kind: FaultKind, index: usize, value: u32) -> Fault {
    Fault { kind, index, value }
}

/// Both sides recorded `expected` (comparing the label value only when `with_value`), and a
/// second `take_fault` returns None.
fn expect_fault<B: Backend>(
    ctx: &Ctx<'_, B>,
    kernel: &str,
    case: &dyn std::fmt::Debug,
    expected: Fault,
    with_value: bool,
) -> Res<()> {
    let (be, rf) = ctx.faults()?;
    let same = |f: Option<Fault>| {
        f.is_some_and(|f| {
            f.kind == expected.kind
                && f.index == expected.index
                && (!with_value || f.value == expected.value)
        })
    };
    if !same(rf) {
        return fail(format!(
            "`{kernel}`: the ORACLE recorded {rf:?}, the trait doc says {expected:?} (suite or oracle bug)\n  case: {case:?}"
        ));
    }
    if !same(be) {
        return fail(format!(
            "`{kernel}`: recorded fault {be:?}, expected {expected:?} (the oracle agrees with the expectation)\n  case: {case:?}"
        ));
    }
    let (be, rf) = ctx.faults()?;
    if be.is_some() || rf.is_some() {
        return fail(format!(
            "`{kernel}`: take_fault did not clear the slot: a second take returned backend {be:?}, oracle {rf:?}"
        ));
    }
    Ok(())
}

fn run_case<B: Backend>(ctx: &Ctx<'_, B>, case: &Case) -> Res<()> {
    let mut g = Gen::new(case.seed);
    let eps = ctx.eps();
    let (rows, cols, r0, c0) = (case.rows, case.cols, case.bad_row, case.bad_col);
    let n = rows * cols;
    let bad = match case.bad_kind {
        0 => f32::NAN,
        1 => f32::INFINITY,
        _ => f32::NEG_INFINITY,
    };
    ctx.no_faults("(fresh backend)", case)?;

    // ---- l2_normalize_forward: non-finite row -> NonFinite(row), row output 0 ----
    let mut x_init = g.normal_vec(n, 1.0);
    x_init[r0 * cols + c0] = bad;
    let x = ctx.buf(&x_init)?;
    let mut y = ctx.buf(&g.poison(n))?;
    let mut norms = ctx.buf(&g.poison(rows))?;
    ctx.be
        .l2_normalize_forward(&x.be, &mut y.be, &mut norms.be, rows, cols)
        .or_fail("l2_normalize_forward")?;
    ctx.rf
        .l2_normalize_forward(&x.rf, &mut y.rf, &mut norms.rf, rows, cols)
        .or_fail("oracle l2_normalize_forward")?;
    expect_fault(
        ctx,
        "l2_normalize_forward (non-finite row)",
        case,
        fault(FaultKind::NonFinite, r0, 0),
        true,
    )?;
    let exp_y = ctx.read_rf(&y.rf)?;
    let k = tol::ROWS * eps * tol::growth(cols);
    let t: Vec<f64> = exp_y.iter().map(|v| k * v.abs()).collect();
    ctx.check(
        "l2_normalize_forward",
        "y (non-finite row must be 0)",
        case,
        &[rows, cols],
        &y,
        &t,
    )?;

    // ---- zero-norm row (exact zeros, or subnormals whose norm is below f32::MIN_POSITIVE) ----
    let mut x_init = g.normal_vec(n, 1.0);
    let tiny = g.chance(0.5) && cols <= 100;
    for c in 0..cols {
        x_init[r0 * cols + c] = if tiny { 1.0e-40 } else { 0.0 };
    }
    let x = ctx.buf(&x_init)?;
    let mut y = ctx.buf(&g.poison(n))?;
    let mut norms = ctx.buf(&g.poison(rows))?;
    ctx.be
        .l2_normalize_forward(&x.be, &mut y.be, &mut norms.be, rows, cols)
        .or_fail("l2_normalize_forward")?;
    ctx.rf
        .l2_normalize_forward(&x.rf, &mut y.rf, &mut norms.rf, rows, cols)
        .or_fail("oracle l2_normalize_forward")?;
    expect_fault(
        ctx,
        "l2_normalize_forward (zero-norm row)",
        case,
        fault(FaultKind::ZeroNormRow, r0, 0),
        true,
    )?;
    let exp_y = ctx.read_rf(&y.rf)?;
    let t: Vec<f64> = exp_y.iter().map(|v| k * v.abs()).collect();
    ctx.check(
        "l2_normalize_forward",
        "y (zero-norm row must be 0)",
        &(case, tiny),
        &[rows, cols],
        &y,
        &t,
    )?;

    // ---- l2_normalize_backward: a zero-norm row gets gradient 0, not NaN ----
    let y32 = ctx.oracle_f32(&y)?;
    let mut n32 = ctx.oracle_f32(&norms)?;
    n32[r0] = 0.0;
    let (yb, nb) = (ctx.buf(&y32)?, ctx.buf(&n32)?);
    let gy = ctx.buf(&g.normal_vec(n, 1.0))?;
    let mut gx = ctx.buf(&g.poison(n))?;
    ctx.be
        .l2_normalize_backward(&yb.be, &nb.be, &gy.be, &mut gx.be, rows, cols)
        .or_fail("l2_normalize_backward")?;
    ctx.rf
        .l2_normalize_backward(&yb.rf, &nb.rf, &gy.rf, &mut gx.rf, rows, cols)
        .or_fail("oracle l2_normalize_backward")?;
    let got = ctx.read_be(&gx.be)?;
    let row = &got[r0 * cols..(r0 + 1) * cols];
    if row.iter().any(|v| *v != 0.0) {
        return fail(format!(
            "l2_normalize_backward: the zero-norm row {r0} must get gradient 0, got {row:?}\n  case: {case:?}"
        ));
    }
    ctx.faults()?;

    // ---- row_softmax / row_logsumexp: non-finite valid entry -> NonFinite(row) ----
    let valid = c0 + 1 + g.below(cols - c0);
    let desc = RowsDesc {
        rows,
        cols,
        valid_cols: valid,
    };
    let mut x_init = g.normal_vec(n, 2.0);
    x_init[r0 * cols + c0] = f32::NAN;
    let x = ctx.buf(&x_init)?;
    let mut y = ctx.buf(&g.poison(n))?;
    ctx.be
        .row_softmax(&desc, &x.be, &mut y.be)
        .or_fail("row_softmax")?;
    ctx.rf
        .row_softmax(&desc, &x.rf, &mut y.rf)
        .or_fail("oracle row_softmax")?;
    expect_fault(
        ctx,
        "row_softmax",
        &(case, desc),
        fault(FaultKind::NonFinite, r0, 0),
        true,
    )?;
    let mut out = ctx.buf(&g.poison(rows))?;
    ctx.be
        .row_logsumexp(&desc, &x.be, &mut out.be)
        .or_fail("row_logsumexp")?;
    ctx.rf
        .row_logsumexp(&desc, &x.rf, &mut out.rf)
        .or_fail("oracle row_logsumexp")?;
    expect_fault(
        ctx,
        "row_logsumexp",
        &(case, desc),
        fault(FaultKind::NonFinite, r0, 0),
        true,
    )?;

    // ---- soft_cross_entropy: NonFinite(row) ----
    let mut logits = ctx.buf(&x_init)?;
    let targets = ctx.buf(&g.uniform_vec(n, 0.0, 1.0))?;
    let mut loss = ctx.buf(&g.poison(rows))?;
    ctx.be
        .soft_cross_entropy(&desc, 1.0, &mut logits.be, &targets.be, &mut loss.be)
        .or_fail("soft_cross_entropy")?;
    ctx.rf
        .soft_cross_entropy(&desc, 1.0, &mut logits.rf, &targets.rf, &mut loss.rf)
        .or_fail("oracle soft_cross_entropy")?;
    expect_fault(
        ctx,
        "soft_cross_entropy",
        &(case, desc),
        fault(FaultKind::NonFinite, r0, 0),
        true,
    )?;

    // ---- softmax_cross_entropy: NaN -> NonFinite(row) ----
    let labels: Vec<u32> = (0..rows).map(|_| g.below(valid) as u32).collect();
    let mut logits = ctx.buf(&x_init)?;
    let lab = ctx.idx(&labels)?;
    let mut loss = ctx.buf(&g.poison(rows))?;
    ctx.be
        .softmax_cross_entropy(&desc, 1.0, &mut logits.be, &lab.be, &mut loss.be)
        .or_fail("softmax_cross_entropy")?;
    ctx.rf
        .softmax_cross_entropy(&desc, 1.0, &mut logits.rf, &lab.rf, &mut loss.rf)
        .or_fail("oracle softmax_cross_entropy")?;
    expect_fault(
        ctx,
        "softmax_cross_entropy (NaN)",
        &(case, desc),
        fault(FaultKind::NonFinite, r0, 0),
        true,
    )?;

    // ---- softmax_cross_entropy: label >= valid_cols -> LabelOutOfRange(row, label); that
    // row's loss and gradient are 0, the others unaffected ----
    let x_init = g.normal_vec(n, 2.0);
    let mut labels: Vec<u32> = (0..rows).map(|_| g.below(valid) as u32).collect();
    let bad_label = valid as u32 + g.below(3) as u32;
    labels[r0] = bad_label;
    let mut logits = ctx.buf(&x_init)?;
    let lab = ctx.idx(&labels)?;
    let mut loss = ctx.buf(&g.poison(rows))?;
    ctx.be
        .softmax_cross_entropy(&desc, 0.5, &mut logits.be, &lab.be, &mut loss.be)
        .or_fail("softmax_cross_entropy")?;
    ctx.rf
        .softmax_cross_entropy(&desc, 0.5, &mut logits.rf, &lab.rf, &mut loss.rf)
        .or_fail("oracle softmax_cross_entropy")?;
    let site = (case, desc, &labels);
    expect_fault(
        ctx,
        "softmax_cross_entropy (label out of range)",
        &site,
        fault(FaultKind::LabelOutOfRange, r0, bad_label),
        true,
    )?;
    // Generic bound for this check: |gradient| <= 0.5, loss <= |max| + ln(n) + |x| + ...
    let k = tol::LOSS * eps * (8.0 + 2.0 * tol::growth(cols));
    let (g_be, g_rf) = (ctx.read_be(&logits.be)?, ctx.read_rf(&logits.rf)?);
    for c in 0..cols {
        if g_rf[r0 * cols + c] != 0.0 || g_be[r0 * cols + c] != 0.0 {
            return fail(format!(
                "softmax_cross_entropy: row {r0} has a label out of range, its gradient must be 0; column {c}: backend {}, oracle {}\n  case: {site:?}",
                g_be[r0 * cols + c],
                g_rf[r0 * cols + c]
            ));
        }
    }
    ctx.check_values(
        "softmax_cross_entropy",
        "gradient (one bad label)",
        &site,
        &[rows, cols],
        &g_be,
        &g_rf,
        &vec![k; n],
    )?;
    let (l_be, l_rf) = (ctx.read_be(&loss.be)?, ctx.read_rf(&loss.rf)?);
    if l_be[r0] != 0.0 || l_rf[r0] != 0.0 {
        return fail(format!(
            "softmax_cross_entropy: row {r0} has a label out of range, its loss must be 0: backend {}, oracle {}\n  case: {site:?}",
            l_be[r0], l_rf[r0]
        ));
    }
    ctx.check_values(
        "softmax_cross_entropy",
        "loss (one bad label)",
        &site,
        &[rows],
        &l_be,
        &l_rf,
        &vec![k * 4.0; rows],
    )?;

    // ---- contrastive_rows: NaN logit -> NonFinite(anchor index); bad label -> LabelOutOfRange
    // (column index, label) ----
    let batch = rows;
    let queue = g.below(6);
    let ccols = 2 * batch + queue;
    let num_classes = 1 + g.below(4) as u32;
    let row_offset = g.below(batch);
    let block = 1 + g.below(batch - row_offset);
    let cdesc = ContrastiveRowsDesc {
        rows: block,
        row_offset,
        batch,
        cols: ccols,
        valid_cols: ccols,
        num_classes,
        weighting: if g.chance(0.5) {
            PositiveWeighting::SupCon
        } else {
            PositiveWeighting::Decoupled { beta: 8.0 }
        },
        grad_scale: 1.0 / batch as f64,
    };
    let yl: Vec<u32> = (0..batch)
        .map(|_| g.below(num_classes as usize) as u32)
        .collect();
    let labels: Vec<u32> = (0..ccols)
        .map(|j| {
            if j < 2 * batch {
                yl[j % batch]
            } else {
                g.below(num_classes as usize) as u32
            }
        })
        .collect();
    let rb = g.below(block);
    let anchor = row_offset + rb;
    let mut s_init = g.uniform_vec(block * ccols, -5.0, 5.0);
    let mut jn = g.below(ccols);
    if jn == anchor {
        jn = batch + anchor; // a column other than the excluded self column
    }
    s_init[rb * ccols + jn] = f32::NAN;
    let mut logits = ctx.buf(&s_init)?;
    let lab = ctx.idx(&labels)?;
    let mut loss = ctx.buf(&g.poison(row_offset + block))?;
    ctx.be
        .contrastive_rows(&cdesc, &mut logits.be, &lab.be, &mut loss.be)
        .or_fail("contrastive_rows")?;
    ctx.rf
        .contrastive_rows(&cdesc, &mut logits.rf, &lab.rf, &mut loss.rf)
        .or_fail("oracle contrastive_rows")?;
    expect_fault(
        ctx,
        "contrastive_rows (NaN logit)",
        &(cdesc, rb, jn),
        fault(FaultKind::NonFinite, anchor, 0),
        true,
    )?;

    let s_init = g.uniform_vec(block * ccols, -5.0, 5.0);
    let mut labels = labels;
    let jl = g.below(ccols);
    let bad_label = num_classes + g.below(5) as u32;
    labels[jl] = bad_label;
    let mut logits = ctx.buf(&s_init)?;
    let lab = ctx.idx(&labels)?;
    let mut loss = ctx.buf(&g.poison(row_offset + block))?;
    ctx.be
        .contrastive_rows(&cdesc, &mut logits.be, &lab.be, &mut loss.be)
        .or_fail("contrastive_rows")?;
    ctx.rf
        .contrastive_rows(&cdesc, &mut logits.rf, &lab.rf, &mut loss.rf)
        .or_fail("oracle contrastive_rows")?;
    expect_fault(
        ctx,
        "contrastive_rows (label out of range)",
        &(cdesc, &labels),
        fault(FaultKind::LabelOutOfRange, jl, bad_label),
        true,
    )?;

    // ---- max_pool2d_forward: NaN in a window -> NonFinite(output index); 2x2/2 windows do
    // not overlap, so exactly one output sees it ----
    let ps = PoolShape {
        batch: 1 + g.below(2),
        channels: 1 + g.below(3),
        in_height: 2 * (1 + g.below(4)),
        in_width: 2 * (1 + g.below(4)),
        kernel: 2,
        stride: 2,
        padding: 0,
    };
    let mut x_init = g.normal_vec(ps.input_len(), 1.0);
    let bi = g.below(ps.input_len());
    x_init[bi] = f32::NAN;
    let plane_in = ps.in_height * ps.in_width;
    let (p, h, w) = (
        bi / plane_in,
        (bi % plane_in) / ps.in_width,
        bi % ps.in_width,
    );
    let o = p * ps.out_height() * ps.out_width() + (h / 2) * ps.out_width() + w / 2;
    let x = ctx.buf(&x_init)?;
    let mut y = ctx.buf(&g.poison(ps.output_len()))?;
    let mut am = ctx.idx(&vec![0; ps.output_len()])?;
    ctx.be
        .max_pool2d_forward(&ps, &x.be, &mut y.be, &mut am.be)
        .or_fail("max_pool2d_forward")?;
    ctx.rf
        .max_pool2d_forward(&ps, &x.rf, &mut y.rf, &mut am.rf)
        .or_fail("oracle max_pool2d_forward")?;
    expect_fault(
        ctx,
        "max_pool2d_forward",
        &(ps, bi),
        fault(FaultKind::NonFinite, o, 0),
        true,
    )?;

    // ---- roi_align_forward: batch index out of range -> LabelOutOfRange(box index) ----
    let rs = RoiAlignShape {
        batch: 1 + g.below(2),
        channels: 1 + g.below(2),
        height: 4,
        width: 4,
        num_rois: 1 + g.below(3),
        pooled_h: 2,
        pooled_w: 2,
        spatial_scale: 0.25,
        sampling_ratio: 2,
        aligned: false,
    };
    let rb = g.below(rs.num_rois);
    let mut boxes = Vec::new();
    for r in 0..rs.num_rois {
        let b = if r == rb {
            (rs.batch + g.below(3)) as f32
        } else {
            g.below(rs.batch) as f32
        };
        boxes.extend_from_slice(&[b, 1.0, 2.0, 9.0, 13.0]);
    }
    let feats = ctx.buf(&g.normal_vec(rs.features_len(), 1.0))?;
    let bx = ctx.buf(&boxes)?;
    let mut out = ctx.buf(&g.poison(rs.output_len()))?;
    ctx.be
        .roi_align_forward(&rs, &feats.be, &bx.be, &mut out.be)
        .or_fail("roi_align_forward")?;
    ctx.rf
        .roi_align_forward(&rs, &feats.rf, &bx.rf, &mut out.rf)
        .or_fail("oracle roi_align_forward")?;
    expect_fault(
        ctx,
        "roi_align_forward (batch index out of range)",
        &(rs, &boxes),
        fault(FaultKind::LabelOutOfRange, rb, 0),
        false,
    )?;

    // ---- the first fault wins until taken; take clears ----
    let mut x_init = g.normal_vec(n, 1.0);
    for c in 0..cols {
        x_init[r0 * cols + c] = 0.0;
    }
    let x = ctx.buf(&x_init)?;
    let mut y = ctx.buf(&vec![0.0; n])?;
    let mut norms = ctx.buf(&vec![0.0; rows])?;
    ctx.be
        .l2_normalize_forward(&x.be, &mut y.be, &mut norms.be, rows, cols)
        .or_fail("l2_normalize_forward")?;
    ctx.rf
        .l2_normalize_forward(&x.rf, &mut y.rf, &mut norms.rf, rows, cols)
        .or_fail("oracle l2_normalize_forward")?;
    let full = RowsDesc::new(rows, cols);
    let mut labels: Vec<u32> = (0..rows).map(|_| g.below(cols) as u32).collect();
    let rl = (r0 + 1) % rows;
    labels[rl] = cols as u32;
    let mut logits = ctx.buf(&g.normal_vec(n, 1.0))?;
    let lab = ctx.idx(&labels)?;
    let mut loss = ctx.buf(&vec![0.0; rows])?;
    ctx.be
        .softmax_cross_entropy(&full, 1.0, &mut logits.be, &lab.be, &mut loss.be)
        .or_fail("softmax_cross_entropy")?;
    ctx.rf
        .softmax_cross_entropy(&full, 1.0, &mut logits.rf, &lab.rf, &mut loss.rf)
        .or_fail("oracle softmax_cross_entropy")?;
    expect_fault(
        ctx,
        "first fault wins (l2_normalize zero row, then softmax_cross_entropy bad label)",
        case,
        fault(FaultKind::ZeroNormRow, r0, 0),
        true,
    )?;
    ctx.no_faults("(after take_fault)", case)?;
    download_with_fault(ctx, case, r0)
}

/// `download_with_fault` reads what `download` reads and takes the fault as `take_fault` does
/// (the first one, then the slot is clear), also for an empty range.
fn download_with_fault<B: Backend>(ctx: &Ctx<'_, B>, case: &Case, r0: usize) -> Res<()> {
    let (rows, cols) = (case.rows, case.cols);
    let n = rows * cols;
    let mut g = Gen::new(case.seed ^ 0xd0d0);
    let zero_row = |g: &mut Gen| {
        let mut x = g.normal_vec(n, 1.0);
        x[r0 * cols..(r0 + 1) * cols].fill(0.0);
        x
    };
    let x = ctx.buf(&zero_row(&mut g))?;
    let mut y = ctx.buf(&vec![0.0; n])?;
    let mut norms = ctx.buf(&vec![0.0; rows])?;
    let normalize = |y: &mut Dual<B>, norms: &mut Dual<B>| -> Res<()> {
        ctx.be
            .l2_normalize_forward(&x.be, &mut y.be, &mut norms.be, rows, cols)
            .or_fail("l2_normalize_forward")?;
        ctx.rf
            .l2_normalize_forward(&x.rf, &mut y.rf, &mut norms.rf, rows, cols)
            .or_fail("oracle l2_normalize_forward")
    };
    let expected = Some(fault(FaultKind::ZeroNormRow, r0, 0));
    normalize(&mut y, &mut norms)?;
    // From the zero row to the end: an offset, and a length that is no multiple of 4.
    let offset = r0 * cols;
    for (attempt, want) in [(1, expected), (2, None)] {
        let mut got = vec![B::Elem::default(); n - offset];
        let be = ctx
            .be
            .download_with_fault(&y.be, offset, &mut got)
            .or_fail("download_with_fault")?;
        let mut wide = vec![0.0f64; n - offset];
        let rf = ctx
            .rf
            .download_with_fault(&y.rf, offset, &mut wide)
            .or_fail("oracle download_with_fault")?;
        if rf != want {
            return fail(format!(
                "download_with_fault #{attempt}: the ORACLE returned {rf:?}, expected {want:?} (suite or oracle bug)\n  case: {case:?}"
            ));
        }
        if be != want {
            return fail(format!(
                "download_with_fault #{attempt}: returned fault {be:?}, expected {want:?} (the first fault, then none: it must clear the slot)\n  case: {case:?}"
            ));
        }
        let plain = ctx.read_be(&y.be)?;
        if let Some(e) =
            (0..got.len()).find(|&e| got[e].widen().to_bits() != plain[offset + e].to_bits())
        {
            return fail(format!(
                "download_with_fault #{attempt}: element {} read {} where download reads {}\n  case: {case:?}",
                offset + e,
                got[e].widen(),
                plain[offset + e]
            ));
        }
    }
    // Nothing to copy: the fault still comes back, and is cleared.
    normalize(&mut y, &mut norms)?;
    let be = ctx
        .be
        .download_with_fault(&y.be, 0, &mut [])
        .or_fail("download_with_fault (empty)")?;
    ctx.rf.take_fault().or_fail("oracle take_fault")?;
    if be != expected {
        return fail(format!(
            "download_with_fault of nothing returned fault {be:?}, expected {expected:?}\n  case: {case:?}"
        ));
    }
    ctx.no_faults("(after download_with_fault)", case)
}
