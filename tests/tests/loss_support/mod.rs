//! Shared set-up of the loss tests: run a loss on host data through any backend.
#![allow(dead_code)]

use dscl_core::loss::{
    ContrastiveInputs, ContrastiveShape, PatchSelfDistillation, PbsdInputs, PositiveWeighting,
    QueryGradient, SupervisedContrastive,
};
use dscl_core::{Backend, Element, Result};
use proptest::prelude::*;

/// Host-side inputs of one contrastive problem, in f64.
#[derive(Clone, Debug)]
pub struct Problem {
    pub batch: usize,
    pub dim: usize,
    pub queue_len: usize,
    pub queue_filled: usize,
    pub crops: usize,
    pub num_classes: u32,
    pub queries: Vec<f64>,
    pub keys: Vec<f64>,
    pub queue: Vec<f64>,
    pub labels: Vec<u32>,
    pub queue_labels: Vec<u32>,
    pub teachers: Vec<f64>,
    pub students: Vec<f64>,
}

impl Problem {
    pub fn shape(&self) -> ContrastiveShape {
        ContrastiveShape {
            batch: self.batch,
            dim: self.dim,
            queue_len: self.queue_len,
            num_classes: self.num_classes,
        }
    }
}

pub fn normalized_rows(values: Vec<f64>, dim: usize) -> Vec<f64> {
    values
        .chunks(dim)
        .flat_map(|row| {
            let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            row.iter().map(move |x| x / norm).collect::<Vec<_>>()
        })
        .collect()
}

fn unit_rows(rows: usize, dim: usize) -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(-1.0f64..1.0, rows * dim)
        .prop_map(move |v| normalized_rows(v.iter().map(|x| x + 1e-3).collect(), dim))
}

/// Random problems: B in 1..=6, d in 1..=5, K in 0..=8 (partly filled), 1..=4 classes with
/// imbalanced label draws, so classes with one sample and anchors with no other positive occur.
pub fn problems() -> impl Strategy<Value = Problem> {
    (1usize..=6, 1usize..=5, 0usize..=8, 1usize..=3, 1u32..=4)
        .prop_flat_map(|(batch, dim, queue_len, crops, num_classes)| {
            (
                Just((batch, dim, queue_len, crops, num_classes)),
                0..=queue_len,
                unit_rows(batch, dim),
                unit_rows(batch, dim),
                unit_rows(queue_len, dim),
                proptest::collection::vec(0..num_classes * num_classes, batch),
                proptest::collection::vec(0..num_classes * num_classes, queue_len),
                unit_rows(crops * batch, dim),
                unit_rows(crops * batch, dim),
            )
        })
        .prop_map(
            |((batch, dim, queue_len, crops, num_classes), queue_filled, q, k, u, y, yq, t, s)| {
                // sqrt of a uniform draw over 0..n^2 gives class c probability (2c+1)/n^2: imbalanced.
                let skew = |v: Vec<u32>| -> Vec<u32> {
                    v.into_iter()
                        .map(|x| (x as f64).sqrt() as u32 % num_classes)
                        .collect()
                };
                Problem {
                    batch,
                    dim,
                    queue_len,
                    queue_filled,
                    crops,
                    num_classes,
                    queries: q,
                    keys: k,
                    queue: u,
                    labels: skew(y),
                    queue_labels: skew(yq),
                    teachers: t,
                    students: s,
                }
            },
        )
}

pub fn upload<B: Backend>(backend: &B, host: &[f64]) -> Result<B::Buffer> {
    let elems: Vec<B::Elem> = host.iter().map(|&x| B::Elem::from_f64(x)).collect();
    let mut buf = backend.alloc(elems.len())?;
    backend.upload(&mut buf, 0, &elems)?;
    Ok(buf)
}

pub fn upload_labels<B: Backend>(backend: &B, host: &[u32]) -> Result<B::IndexBuffer> {
    let mut buf = backend.alloc_index(host.len())?;
    backend.upload_index(&mut buf, 0, host)?;
    Ok(buf)
}

pub fn download<B: Backend>(backend: &B, buf: &B::Buffer, len: usize) -> Result<Vec<f64>> {
    let mut host = vec![B::Elem::default(); len];
    backend.download(buf, 0, &mut host)?;
    Ok(host.iter().map(|x| x.widen()).collect())
}

/// (loss, dLoss/dqueries) of SupCon or DSCL on `p`.
pub fn contrastive<B: Backend>(
    backend: &B,
    p: &Problem,
    weighting: PositiveWeighting,
    tau: f64,
    mode: QueryGradient,
    max_block_elems: usize,
) -> Result<(f64, Vec<f64>)> {
    let q = upload(backend, &p.queries)?;
    let k = upload(backend, &p.keys)?;
    let u = upload(backend, &p.queue)?;
    let y = upload_labels(backend, &p.labels)?;
    let yq = upload_labels(backend, &p.queue_labels)?;
    let inputs = ContrastiveInputs::<B> {
        queries: &q,
        keys: &k,
        queue: &u,
        labels: &y,
        queue_labels: &yq,
        queue_filled: p.queue_filled,
    };
    let mut loss = SupervisedContrastive::new(backend, p.shape(), weighting, tau, max_block_elems)?;
    let mut grad = backend.alloc(p.batch * p.dim)?;
    let value = loss.forward_backward(backend, &inputs, mode, &mut grad)?;
    Ok((value, download(backend, &grad, p.batch * p.dim)?))
}

/// (loss, dLoss/dstudents) of PBSD on `p`.
pub fn pbsd<B: Backend>(
    backend: &B,
    p: &Problem,
    tau: f64,
    max_block_elems: usize,
) -> Result<(f64, Vec<f64>)> {
    let t = upload(backend, &p.teachers)?;
    let s = upload(backend, &p.students)?;
    let k = upload(backend, &p.keys)?;
    let u = upload(backend, &p.queue)?;
    let inputs = PbsdInputs::<B> {
        teachers: &t,
        students: &s,
        keys: &k,
        queue: &u,
        queue_filled: p.queue_filled,
    };
    let mut loss = PatchSelfDistillation::with_max_block_elems(
        backend,
        p.shape(),
        p.crops,
        tau,
        max_block_elems,
    )?;
    let len = p.crops * p.batch * p.dim;
    let mut grad = backend.alloc(len)?;
    let value = loss.forward_backward(backend, &inputs, &mut grad)?;
    Ok((value, download(backend, &grad, len)?))
}

/// Central finite differences of `f` at `x`, step `h`.
pub fn finite_differences(x: &[f64], h: f64, mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut probe = x.to_vec();
    (0..x.len())
        .map(|e| {
            probe[e] = x[e] + h;
            let up = f(&probe);
            probe[e] = x[e] - h;
            let down = f(&probe);
            probe[e] = x[e];
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// Largest |a - b| / max(|b|, floor).
pub fn max_rel_error(a: &[f64], b: &[f64], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(floor))
        .fold(0.0, f64::max)
}
