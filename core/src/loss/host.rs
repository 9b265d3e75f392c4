//! A contrastive loss problem held on the host: the one type that the loss tests, the
//! benchmarks, the fuzz targets and the vectors reader of `runtime verify` fill in their own
//! ways (proptest strategies, a seeded generator, arbitrary bytes, a JSON file) and then run
//! through any backend.
//!
//! Values are kept in f64 by default whatever the backend computes in: each upload rounds them
//! to the backend's element once, so one problem gives an f64 oracle and an f32 backend the
//! same inputs up to that rounding. A benchmark at the paper's shapes keeps them in f32
//! (`HostProblem<f32>`), half the host memory for the same values on an f32 backend. The fields are public on purpose: a fuzz target shortens a
//! buffer to check the shape errors, a test perturbs one value for finite differences.

use alloc::vec;
use alloc::vec::Vec;

use crate::backend::Backend;
use crate::element::Element;
use crate::error::Result;
use crate::loss::{
    ContrastiveInputs, ContrastiveShape, PatchSelfDistillation, PbsdInputs, PositiveWeighting,
    QueryGradient, SupervisedContrastive,
};

/// Host-side inputs of SupCon/DSCL and PBSD, row-major, in `T` (f64 unless said).
#[derive(Clone, Debug, PartialEq)]
pub struct HostProblem<T = f64> {
    /// B, d, K and the class count.
    pub shape: ContrastiveShape,
    /// Queue rows holding real keys (the first `queue_filled`; the rest are masked).
    pub queue_filled: usize,
    /// C: crops per image of PBSD.
    pub crops: usize,
    /// `[B, d]`.
    pub queries: Vec<T>,
    /// `[B, d]`.
    pub keys: Vec<T>,
    /// `[K, d]` (fewer rows when a caller tests a short queue).
    pub queue: Vec<T>,
    /// `[B]`.
    pub labels: Vec<u32>,
    /// `[K]`.
    pub queue_labels: Vec<u32>,
    /// PBSD's teachers, `[C, B, d]`.
    pub teachers: Vec<T>,
    /// PBSD's students, `[C, B, d]`.
    pub students: Vec<T>,
}

/// A [`HostProblem`] uploaded to a backend.
pub struct DeviceProblem<B: Backend> {
    pub queries: B::Buffer,
    pub keys: B::Buffer,
    pub queue: B::Buffer,
    pub labels: B::IndexBuffer,
    pub queue_labels: B::IndexBuffer,
    pub teachers: B::Buffer,
    pub students: B::Buffer,
    pub queue_filled: usize,
}

impl<T: Copy + Into<f64>> HostProblem<T> {
    /// Every buffer on `backend`, each value rounded once to its element.
    pub fn upload<B: Backend>(&self, backend: &B) -> Result<DeviceProblem<B>> {
        Ok(DeviceProblem {
            queries: upload_values(backend, &self.queries)?,
            keys: upload_values(backend, &self.keys)?,
            queue: upload_values(backend, &self.queue)?,
            labels: upload_labels(backend, &self.labels)?,
            queue_labels: upload_labels(backend, &self.queue_labels)?,
            teachers: upload_values(backend, &self.teachers)?,
            students: upload_values(backend, &self.students)?,
            queue_filled: self.queue_filled,
        })
    }

    /// SupCon or DSCL (by `weighting`) on `backend`: the loss and dLoss/dqueries.
    pub fn contrastive<B: Backend>(
        &self,
        backend: &B,
        weighting: PositiveWeighting,
        temperature: f64,
        mode: QueryGradient,
        max_block_elems: usize,
    ) -> Result<(f64, Vec<f64>)> {
        let device = self.upload(backend)?;
        let mut loss = SupervisedContrastive::new(
            backend,
            self.shape,
            weighting,
            temperature,
            max_block_elems,
        )?;
        let len = self.shape.batch * self.shape.dim;
        let mut grad = backend.alloc(len)?;
        let value =
            loss.forward_backward(backend, &device.contrastive_inputs(), mode, &mut grad)?;
        Ok((value, download_values(backend, &grad, len)?))
    }

    /// PBSD on `backend`: the loss and dLoss/dstudents.
    pub fn pbsd<B: Backend>(
        &self,
        backend: &B,
        temperature: f64,
        max_block_elems: usize,
    ) -> Result<(f64, Vec<f64>)> {
        let device = self.upload(backend)?;
        let mut loss = PatchSelfDistillation::with_max_block_elems(
            backend,
            self.shape,
            self.crops,
            temperature,
            max_block_elems,
        )?;
        let len = self.crops * self.shape.batch * self.shape.dim;
        let mut grad = backend.alloc(len)?;
        let value = loss.forward_backward(backend, &device.pbsd_inputs(), &mut grad)?;
        Ok((value, download_values(backend, &grad, len)?))
    }
}

impl<B: Backend> DeviceProblem<B> {
    /// The inputs of SupCon/DSCL.
    pub fn contrastive_inputs(&self) -> ContrastiveInputs<'_, B> {
        ContrastiveInputs {
            queries: &self.queries,
            keys: &self.keys,
            queue: &self.queue,
            labels: &self.labels,
            queue_labels: &self.queue_labels,
            queue_filled: self.queue_filled,
        }
    }

    /// The inputs of PBSD.
    pub fn pbsd_inputs(&self) -> PbsdInputs<'_, B> {
        PbsdInputs {
            teachers: &self.teachers,
            students: &self.students,
            keys: &self.keys,
            queue: &self.queue,
            queue_filled: self.queue_filled,
        }
    }
}

/// A new buffer holding `host`, each value rounded to the backend's element.
pub fn upload_values<B: Backend, T: Copy + Into<f64>>(
    backend: &B,
    host: &[T],
) -> Result<B::Buffer> {
    // Converted in chunks, so a queue of 65536 rows needs no second full-size host copy.
    const CHUNK: usize = 1 << 16;
    let mut buf = backend.alloc(host.len())?;
    let mut elems = Vec::with_capacity(host.len().min(CHUNK));
    for (i, part) in host.chunks(CHUNK).enumerate() {
        elems.clear();
        elems.extend(part.iter().map(|&x| B::Elem::from_f64(x.into())));
        backend.upload(&mut buf, i * CHUNK, &elems)?;
    }
    Ok(buf)
}

/// A new index buffer holding `host`.
pub fn upload_labels<B: Backend>(backend: &B, host: &[u32]) -> Result<B::IndexBuffer> {
    let mut buf = backend.alloc_index(host.len())?;
    backend.upload_index(&mut buf, 0, host)?;
    Ok(buf)
}

/// The first `len` values of `buf`, widened to f64.
pub fn download_values<B: Backend>(backend: &B, buf: &B::Buffer, len: usize) -> Result<Vec<f64>> {
    let mut host = vec![B::Elem::default(); len];
    backend.download(buf, 0, &mut host)?;
    Ok(host.iter().map(|x| x.widen()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::DEFAULT_MAX_BLOCK_ELEMS;
    use crate::reference::ReferenceBackend;

    /// Two anchors of different classes, no queue: SupCon's loss is the mean over anchors of
    /// -log(exp(1/tau) / sum over the other three columns), computed here by hand.
    #[test]
    fn a_hand_computed_supcon_problem() {
        let p = HostProblem {
            shape: ContrastiveShape {
                batch: 2,
                dim: 2,
                queue_len: 0,
                num_classes: 2,
            },
            queue_filled: 0,
            crops: 1,
            queries: vec![1.0, 0.0, 0.0, 1.0],
            keys: vec![1.0, 0.0, 0.0, 1.0],
            queue: vec![],
            labels: vec![0, 1],
            queue_labels: vec![],
            teachers: vec![1.0, 0.0, 0.0, 1.0],
            students: vec![1.0, 0.0, 0.0, 1.0],
        };
        let backend = ReferenceBackend::<f64>::new();
        let tau = 0.5;
        let (loss, grad) = p
            .contrastive(
                &backend,
                PositiveWeighting::SupCon,
                tau,
                QueryGradient::AnchorOnly,
                DEFAULT_MAX_BLOCK_ELEMS,
            )
            .unwrap();
        // Each anchor: its key at similarity 1, the other query and key at 0.
        let e = libm::exp(1.0 / tau);
        let expected = -libm::log(e / (e + 2.0));
        assert!((loss - expected).abs() < 1e-12, "{loss} vs {expected}");
        assert_eq!(grad.len(), 4);
    }
}
