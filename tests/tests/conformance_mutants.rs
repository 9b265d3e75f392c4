//! The suite has teeth: `ReferenceBackend<f32>` with one deliberate bug at a time (a mutant)
//! must fail the family that covers the kernel. Each mutant is a plausible backend bug: an
//! output read before it is written, an accumulation that overwrites, a mask ignored, a flag
//! ignored, a fault lost or kept, a panic on a short buffer.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use dscl_core::backend::prelude::*;
use dscl_core::desc::{
    BatchNormShape, ContrastiveRowsDesc, Conv2dShape, GemmDesc, PoolShape, PositiveWeighting,
    RoiAlignShape, RowsDesc, SgdParams,
};
use dscl_core::reference::{ReferenceBackend, ReferenceBuffer, ReferenceIndexBuffer};
use dscl_core::{BufferLen, Error, Fault, FaultKind, Result};
use dscl_tests::conformance::Conformance;
use dscl_tests::harness::Config;

#[derive(Clone, Copy, Debug, PartialEq)]
enum M {
    /// No bug: the wrapper itself must pass.
    None,
    AllocDirty,
    SumIgnoresScale,
    GemmReadsCWhenBetaZero,
    GemmAlphaOff1e5,
    BiasBackwardOverwrites,
    ConvFilterOverwrites,
    ConvForwardReadsOutput,
    BnMomentumFlipped,
    BnBackwardOverwritesDgamma,
    ReluBackwardPassesAll,
    MaxPoolBackwardNoZero,
    GapBackwardNoDivide,
    RoiAlignFlipsAligned,
    RoiAlignBackwardOverwrites,
    L2LosesFaults,
    SoftmaxIgnoresMask,
    ContrastiveIgnoresMask,
    ContrastiveAlwaysSupCon,
    ContrastiveFaultIndexInBlock,
    SoftCeIgnoresGradScale,
    SoftmaxCeIgnoresGradScale,
    SgdIgnoresNesterov,
    SgdIgnoresFirstStep,
    EmaSwapped,
    TakeFaultSticky,
    DownloadWithFaultKeepsSlot,
    ShortBufferPanics,
    ShortBufferWrongError,
}

struct Mutant {
    inner: ReferenceBackend<f32>,
    m: M,
    /// A fault the mutant rewrote, reported before the inner slot.
    pending: Cell<Option<Fault>>,
    /// For TakeFaultSticky: the last fault ever returned.
    sticky: Cell<Option<Fault>>,
}

impl Mutant {
    fn new(m: M) -> Self {
        Mutant {
            inner: ReferenceBackend::new(),
            m,
            pending: Cell::new(None),
            sticky: Cell::new(None),
        }
    }
    fn is(&self, m: M) -> bool {
        self.m == m
    }
}

type Buf = ReferenceBuffer<f32>;
type Idx = ReferenceIndexBuffer;

impl MemoryOps for Mutant {
    type Elem = f32;

    type Buffer = Buf;

    type IndexBuffer = Idx;

    fn device_name(&self) -> &str {
        "mutant reference"
    }

    fn alloc(&self, len: usize) -> Result<Buf> {
        let mut b = self.inner.alloc(len)?;
        if self.is(M::AllocDirty) {
            b.as_mut_slice().fill(1.0);
        }
        Ok(b)
    }

    fn alloc_index(&self, len: usize) -> Result<Idx> {
        self.inner.alloc_index(len)
    }

    fn upload(&self, dst: &mut Buf, offset: usize, src: &[f32]) -> Result<()> {
        self.inner.upload(dst, offset, src)
    }

    fn download(&self, src: &Buf, offset: usize, dst: &mut [f32]) -> Result<()> {
        self.inner.download(src, offset, dst)
    }

    fn upload_index(&self, dst: &mut Idx, offset: usize, src: &[u32]) -> Result<()> {
        self.inner.upload_index(dst, offset, src)
    }

    fn download_index(&self, src: &Idx, offset: usize, dst: &mut [u32]) -> Result<()> {
        self.inner.download_index(src, offset, dst)
    }

    fn take_fault(&self) -> Result<Option<Fault>> {
        let f = match self.pending.take() {
            Some(f) => {
                self.inner.take_fault()?;
                Some(f)
            }
            None => self.inner.take_fault()?,
        };
        if self.is(M::TakeFaultSticky) {
            if f.is_some() {
                self.sticky.set(f);
            }
            return Ok(self.sticky.get());
        }
        Ok(f)
    }

    // Not forwarded to the inner backend: the trait's default (download, then this wrapper's
    // own `take_fault`) keeps the mutants of the fault slot in play.
    fn download_with_fault(
        &self,
        src: &Buf,
        offset: usize,
        dst: &mut [f32],
    ) -> Result<Option<Fault>> {
        self.inner.download(src, offset, dst)?;
        let f = self.take_fault()?;
        if self.is(M::DownloadWithFaultKeepsSlot) {
            self.pending.set(f);
        }
        Ok(f)
    }
}

impl ElementwiseOps for Mutant {
    fn fill(&self, x: &mut Buf, offset: usize, len: usize, value: f64) -> Result<()> {
        self.inner.fill(x, offset, len, value)
    }

    fn copy(&self, s: &Buf, so: usize, d: &mut Buf, dof: usize, len: usize) -> Result<()> {
        self.inner.copy(s, so, d, dof, len)
    }

    fn copy_index(&self, s: &Idx, so: usize, d: &mut Idx, dof: usize, len: usize) -> Result<()> {
        self.inner.copy_index(s, so, d, dof, len)
    }

    fn scale(&self, x: &mut Buf, len: usize, alpha: f64) -> Result<()> {
        self.inner.scale(x, len, alpha)
    }

    fn axpy(&self, alpha: f64, x: &Buf, y: &mut Buf, len: usize) -> Result<()> {
        self.inner.axpy(alpha, x, y, len)
    }

    fn add(&self, a: &Buf, b: &Buf, out: &mut Buf, len: usize) -> Result<()> {
        if self.is(M::ShortBufferWrongError) && out.len() < len {
            return Err(Error::InvalidArgument {
                what: "add",
                reason: "mutant",
            });
        }
        self.inner.add(a, b, out, len)
    }

    fn sum(&self, x: &Buf, len: usize, scale: f64, out: &mut Buf, offset: usize) -> Result<()> {
        let scale = if self.is(M::SumIgnoresScale) {
            1.0
        } else {
            scale
        };
        self.inner.sum(x, len, scale, out, offset)
    }

    fn relu_forward(&self, x: &Buf, y: &mut Buf, len: usize) -> Result<()> {
        if self.is(M::ShortBufferPanics) {
            let _ = y.as_slice()[len.saturating_sub(1)]; // panics on a short y
        }
        self.inner.relu_forward(x, y, len)
    }

    fn relu_backward(&self, y: &Buf, gy: &Buf, gx: &mut Buf, len: usize) -> Result<()> {
        if self.is(M::ReluBackwardPassesAll) {
            return self.inner.copy(gy, 0, gx, 0, len);
        }
        self.inner.relu_backward(y, gy, gx, len)
    }
}

impl DenseOps for Mutant {
    fn gemm(&self, d: &GemmDesc, a: &Buf, b: &Buf, c: &mut Buf) -> Result<()> {
        let mut d = *d;
        if self.is(M::GemmReadsCWhenBetaZero) && d.beta == 0.0 {
            d.beta = 1e-30;
        }
        if self.is(M::GemmAlphaOff1e5) {
            d.alpha *= 1.0 + 1e-5;
        }
        self.inner.gemm(&d, a, b, c)
    }

    fn bias_add(&self, x: &mut Buf, bias: &Buf, rows: usize, cols: usize) -> Result<()> {
        self.inner.bias_add(x, bias, rows, cols)
    }

    fn bias_backward(&self, g: &Buf, gb: &mut Buf, rows: usize, cols: usize) -> Result<()> {
        if self.is(M::BiasBackwardOverwrites) && gb.len() >= cols {
            gb.as_mut_slice()[..cols].fill(0.0);
        }
        self.inner.bias_backward(g, gb, rows, cols)
    }
}

impl ConvOps for Mutant {
    fn conv2d_workspace_len(&self, s: &Conv2dShape) -> usize {
        self.inner.conv2d_workspace_len(s)
    }

    fn conv2d_forward(
        &self,
        s: &Conv2dShape,
        x: &Buf,
        w: &Buf,
        y: &mut Buf,
        ws: &mut Buf,
    ) -> Result<()> {
        let before: Vec<f32> = y.as_slice().to_vec();
        self.inner.conv2d_forward(s, x, w, y, ws)?;
        if self.is(M::ConvForwardReadsOutput) {
            let n = s.output_len();
            for (o, b) in y.as_mut_slice()[..n].iter_mut().zip(&before) {
                *o += 0.0 * *b;
            }
        }
        Ok(())
    }

    fn conv2d_backward_data(
        &self,
        s: &Conv2dShape,
        gy: &Buf,
        w: &Buf,
        gx: &mut Buf,
        ws: &mut Buf,
    ) -> Result<()> {
        self.inner.conv2d_backward_data(s, gy, w, gx, ws)
    }

    fn conv2d_backward_filter(
        &self,
        s: &Conv2dShape,
        x: &Buf,
        gy: &Buf,
        gw: &mut Buf,
        ws: &mut Buf,
    ) -> Result<()> {
        if self.is(M::ConvFilterOverwrites) && gw.len() >= s.weight_len() {
            gw.as_mut_slice()[..s.weight_len()].fill(0.0);
        }
        self.inner.conv2d_backward_filter(s, x, gy, gw, ws)
    }
}

impl BatchNormOps for Mutant {
    fn batch_norm_forward_train(
        &self,
        s: &BatchNormShape,
        io: BnTrainBuffers<'_, Self>,
    ) -> Result<()> {
        let mut s = *s;
        if self.is(M::BnMomentumFlipped) {
            s.momentum = 1.0 - s.momentum;
        }
        self.inner.batch_norm_forward_train(&s, io)
    }

    fn batch_norm_forward_inference(
        &self,
        s: &BatchNormShape,
        io: BnInferenceBuffers<'_, Self>,
    ) -> Result<()> {
        self.inner.batch_norm_forward_inference(s, io)
    }

    fn batch_norm_backward(
        &self,
        s: &BatchNormShape,
        io: BnBackwardBuffers<'_, Self>,
    ) -> Result<()> {
        if self.is(M::BnBackwardOverwritesDgamma) && io.grad_gamma.len() >= s.channels {
            io.grad_gamma.as_mut_slice()[..s.channels].fill(0.0);
        }
        self.inner.batch_norm_backward(s, io)
    }
}

impl PoolOps for Mutant {
    fn max_pool2d_forward(&self, s: &PoolShape, x: &Buf, y: &mut Buf, am: &mut Idx) -> Result<()> {
        self.inner.max_pool2d_forward(s, x, y, am)
    }

    fn max_pool2d_backward(&self, s: &PoolShape, gy: &Buf, am: &Idx, gx: &mut Buf) -> Result<()> {
        let before: Vec<f32> = gx.as_slice().to_vec();
        self.inner.max_pool2d_backward(s, gy, am, gx)?;
        if self.is(M::MaxPoolBackwardNoZero) {
            let n = s.input_len();
            for (o, b) in gx.as_mut_slice()[..n].iter_mut().zip(&before) {
                *o += *b;
            }
        }
        Ok(())
    }

    fn global_avg_pool_forward(
        &self,
        x: &Buf,
        y: &mut Buf,
        b: usize,
        c: usize,
        s: usize,
    ) -> Result<()> {
        self.inner.global_avg_pool_forward(x, y, b, c, s)
    }

    fn global_avg_pool_backward(
        &self,
        gy: &Buf,
        gx: &mut Buf,
        b: usize,
        c: usize,
        s: usize,
    ) -> Result<()> {
        self.inner.global_avg_pool_backward(gy, gx, b, c, s)?;
        if self.is(M::GapBackwardNoDivide) {
            self.inner.scale(gx, b * c * s, s as f64)?;
        }
        Ok(())
    }
}

impl RoiAlignOps for Mutant {
    fn roi_align_forward(&self, s: &RoiAlignShape, f: &Buf, bx: &Buf, out: &mut Buf) -> Result<()> {
        let mut s = *s;
        if self.is(M::RoiAlignFlipsAligned) {
            s.aligned = !s.aligned;
        }
        self.inner.roi_align_forward(&s, f, bx, out)
    }

    fn roi_align_backward(
        &self,
        s: &RoiAlignShape,
        go: &Buf,
        bx: &Buf,
        gf: &mut Buf,
    ) -> Result<()> {
        if self.is(M::RoiAlignBackwardOverwrites) && gf.len() >= s.features_len() {
            gf.as_mut_slice()[..s.features_len()].fill(0.0);
        }
        self.inner.roi_align_backward(s, go, bx, gf)
    }
}

impl RowOps for Mutant {
    fn l2_normalize_forward(
        &self,
        x: &Buf,
        y: &mut Buf,
        n: &mut Buf,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let pending = self.inner.take_fault()?;
        self.inner.l2_normalize_forward(x, y, n, rows, cols)?;
        if self.is(M::L2LosesFaults) {
            self.inner.take_fault()?;
        }
        if let Some(f) = pending {
            self.pending.set(Some(f));
        }
        Ok(())
    }

    fn l2_normalize_backward(
        &self,
        y: &Buf,
        n: &Buf,
        gy: &Buf,
        gx: &mut Buf,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        self.inner.l2_normalize_backward(y, n, gy, gx, rows, cols)
    }

    fn row_softmax(&self, d: &RowsDesc, x: &Buf, y: &mut Buf) -> Result<()> {
        let mut d = *d;
        if self.is(M::SoftmaxIgnoresMask) {
            d.valid_cols = d.cols;
        }
        self.inner.row_softmax(&d, x, y)
    }

    fn row_logsumexp(&self, d: &RowsDesc, x: &Buf, out: &mut Buf) -> Result<()> {
        self.inner.row_logsumexp(d, x, out)
    }

    fn contrastive_rows(
        &self,
        d: &ContrastiveRowsDesc,
        s: &mut Buf,
        l: &Idx,
        loss: &mut Buf,
    ) -> Result<()> {
        let mut d = *d;
        if self.is(M::ContrastiveIgnoresMask) {
            d.valid_cols = d.cols;
        }
        if self.is(M::ContrastiveAlwaysSupCon) {
            d.weighting = PositiveWeighting::SupCon;
        }
        let earlier = self.inner.take_fault()?;
        self.inner.contrastive_rows(&d, s, l, loss)?;
        if self.is(M::ContrastiveFaultIndexInBlock) {
            if let Some(f) = self.inner.take_fault()? {
                let f = if f.kind == FaultKind::NonFinite {
                    Fault {
                        index: f.index - d.row_offset,
                        ..f
                    }
                } else {
                    f
                };
                self.pending.set(earlier.or(Some(f)));
                return Ok(());
            }
        }
        if earlier.is_some() {
            self.pending.set(earlier);
        }
        Ok(())
    }

    fn soft_cross_entropy(
        &self,
        d: &RowsDesc,
        gs: f64,
        x: &mut Buf,
        t: &Buf,
        loss: &mut Buf,
    ) -> Result<()> {
        let gs = if self.is(M::SoftCeIgnoresGradScale) {
            1.0
        } else {
            gs
        };
        self.inner.soft_cross_entropy(d, gs, x, t, loss)
    }

    fn softmax_cross_entropy(
        &self,
        d: &RowsDesc,
        gs: f64,
        x: &mut Buf,
        l: &Idx,
        loss: &mut Buf,
    ) -> Result<()> {
        let gs = if self.is(M::SoftmaxCeIgnoresGradScale) {
            1.0
        } else {
            gs
        };
        self.inner.softmax_cross_entropy(d, gs, x, l, loss)
    }
}

impl OptimOps for Mutant {
    fn sgd_momentum_update(
        &self,
        p: &SgdParams,
        w: &mut Buf,
        g: &Buf,
        v: &mut Buf,
        len: usize,
    ) -> Result<()> {
        let mut p = *p;
        if self.is(M::SgdIgnoresNesterov) {
            p.nesterov = false;
        }
        if self.is(M::SgdIgnoresFirstStep) {
            p.first_step = false;
        }
        self.inner.sgd_momentum_update(&p, w, g, v, len)
    }

    fn ema_update(&self, m: f64, s: &Buf, t: &mut Buf, len: usize) -> Result<()> {
        let m = if self.is(M::EmaSwapped) { 1.0 - m } else { m };
        self.inner.ema_update(m, s, t, len)
    }
}

/// Runs `family` on the mutant; passes when the family FAILS (the bug was caught) with a
/// message that names `needle` (the kernel or check concerned).
fn caught(m: M, family: &str, needle: &str) {
    let cfg = Config::default().with_cases_factor(0.5);
    let result = catch_unwind(AssertUnwindSafe(|| {
        Conformance::with_config(move || Mutant::new(m), cfg).family(family)
    }));
    let Err(payload) = result else {
        panic!("mutant {m:?} survived the `{family}` family: the suite did not notice the bug");
    };
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.contains(needle),
        "mutant {m:?} was caught, but the message does not name `{needle}`:\n{msg}"
    );
}

macro_rules! mutants {
    ($($test:ident: $m:ident => $family:literal, $needle:literal;)*) => {
        $(
            #[test]
            fn $test() {
                caught(M::$m, $family, $needle);
            }
        )*
    };
}

mutants! {
    alloc_dirty: AllocDirty => "memory", "alloc";
    sum_ignores_scale: SumIgnoresScale => "elementwise", "`sum`";
    gemm_reads_c_when_beta_zero: GemmReadsCWhenBetaZero => "gemm", "`gemm`";
    gemm_alpha_off_by_1e5: GemmAlphaOff1e5 => "gemm", "`gemm`";
    bias_backward_overwrites: BiasBackwardOverwrites => "bias", "bias_backward";
    conv_filter_overwrites: ConvFilterOverwrites => "conv2d", "conv2d_backward_filter";
    conv_forward_reads_output: ConvForwardReadsOutput => "conv2d", "conv2d_forward";
    bn_momentum_flipped: BnMomentumFlipped => "batch_norm", "running_";
    bn_backward_overwrites_dgamma: BnBackwardOverwritesDgamma => "batch_norm", "grad_gamma";
    relu_backward_passes_all: ReluBackwardPassesAll => "relu", "relu_backward";
    max_pool_backward_no_zero: MaxPoolBackwardNoZero => "pooling", "max_pool2d_backward";
    gap_backward_no_divide: GapBackwardNoDivide => "pooling", "global_avg_pool_backward";
    roi_align_flips_aligned: RoiAlignFlipsAligned => "roi_align", "roi_align_forward";
    roi_align_backward_overwrites: RoiAlignBackwardOverwrites => "roi_align", "roi_align_backward";
    l2_loses_faults: L2LosesFaults => "faults", "l2_normalize_forward";
    softmax_ignores_mask: SoftmaxIgnoresMask => "row_softmax", "row_softmax";
    contrastive_ignores_mask: ContrastiveIgnoresMask => "contrastive", "contrastive_rows";
    contrastive_always_supcon: ContrastiveAlwaysSupCon => "contrastive", "contrastive_rows";
    contrastive_fault_index_in_block: ContrastiveFaultIndexInBlock => "faults", "contrastive_rows (NaN logit)";
    soft_ce_ignores_grad_scale: SoftCeIgnoresGradScale => "cross_entropy", "soft_cross_entropy";
    softmax_ce_ignores_grad_scale: SoftmaxCeIgnoresGradScale => "cross_entropy", "softmax_cross_entropy";
    sgd_ignores_nesterov: SgdIgnoresNesterov => "optim", "sgd_momentum_update";
    sgd_ignores_first_step: SgdIgnoresFirstStep => "optim", "sgd_momentum_update";
    ema_swapped: EmaSwapped => "optim", "ema_update";
    take_fault_sticky: TakeFaultSticky => "faults", "did not clear";
    download_with_fault_keeps_slot: DownloadWithFaultKeepsSlot => "faults", "it must clear the slot";
    short_buffer_panics: ShortBufferPanics => "shape_errors", "PANICKED";
    short_buffer_wrong_error: ShortBufferWrongError => "shape_errors", "add: out too short";
}

/// The wrapper without a mutation passes every family, so each mutant fails for its bug alone.
#[test]
fn wrapper_without_mutation_passes() {
    let cfg = Config::default().with_cases_factor(0.25);
    Conformance::with_config(|| Mutant::new(M::None), cfg).run_all();
}
