//! `runtime verify`: evaluate SupCon, DSCL and PBSD with gradients on a backend for the inputs
//! of a vectors file and compare every output with the file's expected values.

use crate::io::vectors::{Outputs, Vectors};
use anyhow::{Context, Result};
use dscl_core::backend::prelude::*;
use dscl_core::loss::host::download_values;
use dscl_core::loss::{PatchSelfDistillation, QueryGradient, SupervisedContrastive};

/// Runs every loss of the file on `backend` and returns the same outputs the file states.
pub fn evaluate<B: Backend>(backend: &B, v: &Vectors) -> Result<Outputs> {
    let p = &v.problem;
    let (shape, batch) = (p.shape, p.shape.batch);
    let device = p.upload(backend)?;
    let inputs = device.contrastive_inputs();
    let download = |buf: &B::Buffer, len: usize| download_values(backend, buf, len);

    let bd = batch * shape.dim;
    let mut grad = backend.alloc(bd)?;
    let mut out = Outputs::default();

    let mut dscl = SupervisedContrastive::dscl(backend, shape, v.temperature, v.beta)?;
    out.dscl_loss = dscl
        .forward_backward(
            backend,
            &inputs,
            QueryGradient::ThroughContrastSet,
            &mut grad,
        )
        .context("DSCL")?;
    out.grad_q_dscl = download(&grad, bd)?;
    out.dscl_per_anchor = download(dscl.per_anchor_loss(), batch)?;
    dscl.forward_backward(backend, &inputs, QueryGradient::AnchorOnly, &mut grad)?;
    out.grad_q_dscl_anchor_only = download(&grad, bd)?;

    let mut supcon = SupervisedContrastive::supcon(backend, shape, v.temperature)?;
    out.supcon_loss = supcon
        .forward_backward(
            backend,
            &inputs,
            QueryGradient::ThroughContrastSet,
            &mut grad,
        )
        .context("SupCon")?;
    out.grad_q_supcon = download(&grad, bd)?;
    out.supcon_per_anchor = download(supcon.per_anchor_loss(), batch)?;
    supcon.forward_backward(backend, &inputs, QueryGradient::AnchorOnly, &mut grad)?;
    out.grad_q_supcon_anchor_only = download(&grad, bd)?;

    let mut pbsd = PatchSelfDistillation::new(backend, shape, p.crops, v.temperature)?;
    let pbsd_inputs = device.pbsd_inputs();
    let crop_len = p.crops * bd;
    let mut grad_students = backend.alloc(crop_len)?;
    out.pbsd_loss = pbsd
        .forward_backward(backend, &pbsd_inputs, &mut grad_students)
        .context("PBSD")?;
    out.grad_students_pbsd = download(&grad_students, crop_len)?;
    let per_anchor = download(pbsd.per_anchor_loss(), p.crops * batch)?;
    out.pbsd_per_crop = per_anchor
        .chunks(batch)
        .map(|crop| crop.iter().sum::<f64>() / batch as f64)
        .collect();
    Ok(out)
}

/// How far one output is from its expected value.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub name: &'static str,
    pub max_abs_error: f64,
    /// Largest elementwise `|got - expected| / max(|expected|, 1% of the output's largest
    /// magnitude)`: the floor keeps near-zero gradient entries from dominating.
    pub max_rel_error: f64,
    pub within_tolerance: bool,
}

/// Compares every output of `got` with `expected` at relative tolerance `tol`.
pub fn compare(got: &Outputs, expected: &Outputs, tol: f64) -> Vec<Comparison> {
    let pairs: [(&'static str, &[f64], &[f64]); 11] = [
        ("dscl_loss", &[got.dscl_loss], &[expected.dscl_loss]),
        ("supcon_loss", &[got.supcon_loss], &[expected.supcon_loss]),
        ("pbsd_loss", &[got.pbsd_loss], &[expected.pbsd_loss]),
        (
            "dscl_per_anchor",
            &got.dscl_per_anchor,
            &expected.dscl_per_anchor,
        ),
        (
            "supcon_per_anchor",
            &got.supcon_per_anchor,
            &expected.supcon_per_anchor,
        ),
        ("pbsd_per_crop", &got.pbsd_per_crop, &expected.pbsd_per_crop),
        ("grad_q_dscl", &got.grad_q_dscl, &expected.grad_q_dscl),
        ("grad_q_supcon", &got.grad_q_supcon, &expected.grad_q_supcon),
        (
            "grad_q_dscl_anchor_only",
            &got.grad_q_dscl_anchor_only,
            &expected.grad_q_dscl_anchor_only,
        ),
        (
            "grad_q_supcon_anchor_only",
            &got.grad_q_supcon_anchor_only,
            &expected.grad_q_supcon_anchor_only,
        ),
        (
            "grad_students_pbsd",
            &got.grad_students_pbsd,
            &expected.grad_students_pbsd,
        ),
    ];
    pairs
        .iter()
        .map(|&(name, g, e)| compare_one(name, g, e, tol))
        .collect()
}

fn compare_one(name: &'static str, got: &[f64], expected: &[f64], tol: f64) -> Comparison {
    let scale = expected.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let floor = (0.01 * scale).max(f64::MIN_POSITIVE);
    let mut max_abs: f64 = 0.0;
    let mut max_rel: f64 = 0.0;
    let mut finite = got.len() == expected.len();
    for (g, e) in got.iter().zip(expected) {
        let err = (g - e).abs();
        finite &= g.is_finite();
        max_abs = max_abs.max(err);
        max_rel = max_rel.max(err / e.abs().max(floor));
    }
    Comparison {
        name,
        max_abs_error: if finite { max_abs } else { f64::INFINITY },
        max_rel_error: if finite { max_rel } else { f64::INFINITY },
        within_tolerance: finite && max_rel <= tol,
    }
}
