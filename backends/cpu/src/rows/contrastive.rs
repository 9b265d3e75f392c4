//! The supervised contrastive rows (SupCon and DSCL), fused with their gradient: the hot path of
//! a DSCL step. Each anchor's row is one task in the three cache-resident sweeps the parent
//! module describes; DSCL's decoupled weights (the augmented view against the other positives)
//! are applied in the last sweep, so the row is read three times whatever the weighting.

use dscl_core::desc::{ContrastiveRowsDesc, PositiveWeighting};
use dscl_core::{Fault, FaultKind, Result};

use super::{fault, row_grain, torch_shift};
use crate::parallel::{first_fault, Par, Rows};
use crate::simd::{self, BLOCK, LANES};

/// Sums of one sweep over a segment of a contrastive row.
#[derive(Clone, Copy, Default)]
struct Sweep {
    /// `sum exp(s - max)`.
    exp: f64,
    /// Number of positives (label equal to the anchor's).
    count: u64,
    /// `sum over positives of (s - max)`.
    pos: f64,
}

/// `x[j] = exp(x[j] - m)` in place, summing it and the positives' `x[j] - m`.
#[inline(always)]
fn exp_positives(x: &mut [f32], labels: &[u32], anchor: u32, m: f32) -> Sweep {
    let mut out = Sweep::default();
    for (xb, lb) in x.chunks_mut(BLOCK).zip(labels.chunks(BLOCK)) {
        let mut acc_e = [0.0f32; LANES];
        let mut acc_p = [0.0f32; LANES];
        let mut cnt = [0u32; LANES];
        let mut xc = xb.chunks_exact_mut(LANES);
        let mut lc = lb.chunks_exact(LANES);
        for (xs, ls) in (&mut xc).zip(&mut lc) {
            for l in 0..LANES {
                let d = xs[l] - m;
                let e = simd::exp(d);
                xs[l] = e;
                acc_e[l] += e;
                let pos = ls[l] == anchor;
                acc_p[l] += if pos { d } else { 0.0 };
                cnt[l] += pos as u32;
            }
        }
        for (l, (xv, &lv)) in xc
            .into_remainder()
            .iter_mut()
            .zip(lc.remainder())
            .enumerate()
        {
            let d = *xv - m;
            let e = simd::exp(d);
            *xv = e;
            acc_e[l] += e;
            let pos = lv == anchor;
            acc_p[l] += if pos { d } else { 0.0 };
            cnt[l] += pos as u32;
        }
        out.exp += simd::reduce(&acc_e);
        out.pos += simd::reduce(&acc_p);
        out.count += cnt.iter().map(|&c| c as u64).sum::<u64>();
    }
    out
}

/// `x[j] = x[j] * a - (label_j == anchor ? b : 0)` (x holds `exp(s - max)` on entry).
#[inline(always)]
fn write_gradient(x: &mut [f32], labels: &[u32], anchor: u32, a: f32, b: f32) {
    for (xv, &lv) in x.iter_mut().zip(labels) {
        *xv = *xv * a - if lv == anchor { b } else { 0.0 };
    }
}

/// What a contrastive row needs to know besides its logits.
#[derive(Clone, Copy)]
struct ContrastiveRow<'l> {
    /// The first `valid_cols` contrast labels.
    labels: &'l [u32],
    batch: usize,
    /// `Some(beta)` for DSCL, `None` for SupCon.
    beta: Option<f64>,
    grad_scale: f64,
}

impl ContrastiveRow<'_> {
    /// Loss of anchor `i` on its row (`row.len() == cols`); writes the gradient in place.
    #[inline(always)]
    fn run(&self, row: &mut [f32], i: usize) -> (f32, Option<Fault>) {
        let valid = self.labels.len();
        let anchor = self.labels[i];
        let view = self.batch + i;
        let (row, masked) = row.split_at_mut(valid);
        masked.fill(0.0);
        let (left, rest) = row.split_at_mut(i);
        let (own, right) = rest.split_at_mut(1);
        let (lab_left, lab_rest) = self.labels.split_at(i);
        let lab_right = &lab_rest[1..];
        // The view is always right of the anchor (batch + i > i).
        let view_at = view - i - 1;
        let view_pos = lab_right[view_at] == anchor;
        let s_view = right[view_at];

        let m = torch_shift(simd::max(left).max(simd::max(right)));
        let a = exp_positives(left, lab_left, anchor, m);
        let b = exp_positives(right, lab_right, anchor, m);
        let sum = a.exp + b.exp;
        let count = a.count + b.count;
        let pos = a.pos + b.pos;
        let log_sum = libm::log(sum);
        let f = if (m as f64 + log_sum).is_finite() {
            None
        } else {
            fault(FaultKind::NonFinite, i)
        };

        // Weights: w_other on each positive, w_view on the augmented view, total w_total.
        let d_view = (s_view - m) as f64;
        let (w_other, w_view, w_total, weighted) = match self.beta {
            None => (1.0, 1.0, count as f64, pos),
            Some(beta) => {
                let others = count - view_pos as u64;
                let w_other = if others > 0 {
                    beta / others as f64
                } else {
                    0.0
                };
                let w_view = if view_pos { 1.0 } else { 0.0 };
                let pos_others = if view_pos { pos - d_view } else { pos };
                (
                    w_other,
                    w_view,
                    w_view + w_other * others as f64,
                    w_view * d_view + w_other * pos_others,
                )
            }
        };
        own[0] = 0.0;
        if w_total <= 0.0 {
            // No positive at all: the anchor contributes neither loss nor gradient (as
            // SupConLoss guards an empty positive set).
            left.fill(0.0);
            right.fill(0.0);
            return (0.0, f);
        }
        let loss = log_sum - weighted / w_total;
        let e_view = right[view_at];
        let ga = (self.grad_scale / sum) as f32;
        let gb = (self.grad_scale * w_other / w_total) as f32;
        write_gradient(left, lab_left, anchor, ga, gb);
        write_gradient(right, lab_right, anchor, ga, gb);
        if self.beta.is_some() && view_pos {
            right[view_at] = e_view * ga - (self.grad_scale * w_view / w_total) as f32;
        }
        (loss as f32, f)
    }
}

pub(crate) fn contrastive(
    par: &Par,
    desc: &ContrastiveRowsDesc,
    logits: &mut [f32],
    labels: &[u32],
    loss: &mut [f32],
) -> Result<Option<Fault>> {
    desc.check(logits.len(), labels.len(), loss.len())?;
    let ContrastiveRowsDesc {
        rows,
        row_offset,
        batch,
        cols,
        valid_cols: valid,
        num_classes,
        weighting,
        grad_scale,
    } = *desc;
    let labels = &labels[..valid];
    let label_fault = labels
        .iter()
        .position(|&l| l >= num_classes)
        .map(|j| Fault {
            kind: FaultKind::LabelOutOfRange,
            index: j,
            value: labels[j],
        });
    let ctx = ContrastiveRow {
        labels,
        batch,
        beta: match weighting {
            PositiveWeighting::SupCon => None,
            PositiveWeighting::Decoupled { beta } => Some(beta),
        },
        grad_scale,
    };
    let f = par.run(
        rows,
        row_grain(valid),
        (
            Rows(&mut logits[..rows * cols], cols),
            Rows(&mut loss[row_offset..row_offset + rows], 1),
        ),
        |range, (Rows(lg, _), Rows(ls, _))| {
            simd::dispatch(
                #[inline(always)]
                || {
                    let mut f = None;
                    for (k, r) in range.enumerate() {
                        let (l, rf) = ctx.run(&mut lg[k * cols..(k + 1) * cols], row_offset + r);
                        ls[k] = l;
                        f = f.or(rf);
                    }
                    f
                },
            )
        },
        first_fault,
    );
    Ok(label_fault.or(f))
}
