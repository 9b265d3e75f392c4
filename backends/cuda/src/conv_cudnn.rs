//! Convolutions through cuDNN, where its library is present: one plan per shape (the tensor,
//! filter and convolution descriptors and the algorithms cuDNN's heuristics choose), made on
//! first use and kept, so a training step creates nothing. A shape cuDNN refuses, or a machine
//! without cuDNN, uses the direct kernels of `kernels/conv.cu` instead.
//!
//! fp32 plans forbid tensor cores (`CUDNN_FMA_MATH`: cuDNN's default would round to TF32 on
//! Ampere and later); TF32 plans allow them; bf16 plans take bf16 copies of their inputs and
//! give a bf16 result that is widened back, with f32 accumulation inside cuDNN.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_int;
use std::rc::Rc;
use std::sync::Arc;

use cudarc::cudnn::result::CudnnError;
use cudarc::cudnn::sys::{cudnnConvolutionMode_t, cudnnMathType_t, cudnnTensorFormat_t};
use cudarc::cudnn::{
    sys, ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, CudnnDataType,
    FilterDescriptor, TensorDescriptor,
};
use cudarc::driver::{CudaStream, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr};
use dscl_core::desc::Conv2dShape;
use dscl_core::error::check_len;
use dscl_core::{Error, Result};
use half::bf16;

use crate::backend::{CudaBackend, CudaBuffer};
use crate::bf16::Widen;
use crate::precision::Precision;

/// How the backend convolves.
pub(crate) enum ConvEngine {
    /// No cuDNN on this machine: the direct kernels.
    Direct,
    /// cuDNN on the f32 buffers (fp32 or TF32 arithmetic).
    Cudnn(CudnnConvolutions<f32>),
    /// cuDNN on bf16 copies.
    CudnnBf16(CudnnConvolutions<bf16>),
}

impl ConvEngine {
    /// cuDNN at `precision` when its library loads and a handle starts, else the direct kernels
    /// (the reason is returned for the device description).
    pub(crate) fn open(stream: &Arc<CudaStream>, precision: Precision) -> (Self, &'static str) {
        // SAFETY: probing opens (and closes) the shared library with the platform loader; its
        // initialisers are the vendor's. cudarc would otherwise panic on first use when the
        // library is absent.
        if !unsafe { sys::is_culib_present() } {
            return (ConvEngine::Direct, "direct convolutions: cuDNN not found");
        }
        let Ok(cudnn) = Cudnn::new(stream.clone()) else {
            return (
                ConvEngine::Direct,
                "direct convolutions: cuDNN did not start",
            );
        };
        let engine = match precision {
            Precision::Fp32 => ConvEngine::Cudnn(CudnnConvolutions::new(
                cudnn,
                cudnnMathType_t::CUDNN_FMA_MATH,
            )),
            Precision::Tf32 => ConvEngine::Cudnn(CudnnConvolutions::new(
                cudnn,
                cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
            )),
            Precision::Bf16 => ConvEngine::CudnnBf16(CudnnConvolutions::new(
                cudnn,
                cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
            )),
        };
        (engine, "cuDNN convolutions")
    }
}

/// An element type cuDNN convolves: f32, or bf16 (with f32 scaling factors and accumulation).
pub(crate) trait ConvElement: CudnnDataType + DeviceRepr {}

impl ConvElement for f32 {}

impl ConvElement for bf16 {}

type ShapeKey = [usize; 9];

fn shape_key(s: &Conv2dShape) -> ShapeKey {
    [
        s.batch,
        s.in_channels,
        s.in_height,
        s.in_width,
        s.out_channels,
        s.kernel_h,
        s.kernel_w,
        s.stride,
        s.padding,
    ]
}

/// The plans of one cuDNN handle, by shape; `None` marks a shape cuDNN refused.
pub(crate) struct CudnnConvolutions<T: ConvElement> {
    cudnn: Arc<Cudnn>,
    math: cudnnMathType_t,
    plans: RefCell<HashMap<ShapeKey, Option<Rc<ConvPlan<T>>>>>,
}

impl<T: ConvElement> CudnnConvolutions<T> {
    fn new(cudnn: Arc<Cudnn>, math: cudnnMathType_t) -> Self {
        CudnnConvolutions {
            cudnn,
            math,
            plans: RefCell::new(HashMap::new()),
        }
    }

    /// The plan for `shape`, made on first use.
    pub(crate) fn plan(&self, shape: &Conv2dShape) -> Option<Rc<ConvPlan<T>>> {
        let key = shape_key(shape);
        if let Some(known) = self.plans.borrow().get(&key) {
            return known.clone();
        }
        let made = ConvPlan::new(&self.cudnn, shape, self.math)
            .ok()
            .map(Rc::new);
        self.plans.borrow_mut().insert(key, made.clone());
        made
    }

    /// Scratch elements (f32) the plan for `shape` needs; 0 when it has none.
    pub(crate) fn workspace_len(&self, shape: &Conv2dShape) -> usize {
        self.plan(shape)
            .map_or(0, |plan| plan.workspace_bytes.div_ceil(size_of::<f32>()))
    }
}

/// Descriptors and algorithms for one shape.
pub(crate) struct ConvPlan<T: ConvElement> {
    x: TensorDescriptor<T>,
    w: FilterDescriptor<T>,
    y: TensorDescriptor<T>,
    conv: ConvDescriptor<f32>,
    forward: sys::cudnnConvolutionFwdAlgo_t,
    backward_data: sys::cudnnConvolutionBwdDataAlgo_t,
    backward_filter: sys::cudnnConvolutionBwdFilterAlgo_t,
    /// The largest scratch of the three algorithms.
    workspace_bytes: usize,
}

/// Why a plan could not be made: cuDNN refused, or a size exceeds its `int`.
enum PlanError {
    Cudnn,
    TooLarge,
}

impl From<CudnnError> for PlanError {
    fn from(_: CudnnError) -> Self {
        PlanError::Cudnn
    }
}

impl<T: ConvElement> ConvPlan<T> {
    fn new(
        cudnn: &Arc<Cudnn>,
        s: &Conv2dShape,
        math: cudnnMathType_t,
    ) -> std::result::Result<Self, PlanError> {
        let int = |x: usize| c_int::try_from(x).map_err(|_| PlanError::TooLarge);
        let nchw = cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        let x = cudnn.create_4d_tensor::<T>(
            nchw,
            [
                int(s.batch)?,
                int(s.in_channels)?,
                int(s.in_height)?,
                int(s.in_width)?,
            ],
        )?;
        let w = cudnn.create_4d_filter::<T>(
            nchw,
            [
                int(s.out_channels)?,
                int(s.in_channels)?,
                int(s.kernel_h)?,
                int(s.kernel_w)?,
            ],
        )?;
        let y = cudnn.create_4d_tensor::<T>(
            nchw,
            [
                int(s.batch)?,
                int(s.out_channels)?,
                int(s.out_height())?,
                int(s.out_width())?,
            ],
        )?;
        let pad = int(s.padding)?;
        let stride = int(s.stride)?;
        let mut conv = cudnn.create_conv2d::<f32>(
            [pad, pad],
            [stride, stride],
            [1, 1],
            cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        )?;
        conv.set_math_type(math)?;
        let fwd = ConvForward {
            conv: &conv,
            x: &x,
            w: &w,
            y: &y,
        };
        let forward = fwd.pick_algorithm()?;
        let fwd_bytes = fwd.get_workspace_size(forward)?;
        let bwd_data = ConvBackwardData {
            conv: &conv,
            dx: &x,
            w: &w,
            dy: &y,
        };
        let backward_data = bwd_data.pick_algorithm()?;
        let data_bytes = bwd_data.get_workspace_size(backward_data)?;
        let bwd_filter = ConvBackwardFilter {
            conv: &conv,
            x: &x,
            dw: &w,
            dy: &y,
        };
        let backward_filter = bwd_filter.pick_algorithm()?;
        let filter_bytes = bwd_filter.get_workspace_size(backward_filter)?;
        Ok(ConvPlan {
            x,
            w,
            y,
            conv,
            forward,
            backward_data,
            backward_filter,
            workspace_bytes: fwd_bytes.max(data_bytes).max(filter_bytes),
        })
    }
}

fn cudnn_error(what: &'static str) -> impl Fn(CudnnError) -> Error {
    move |e| Error::Device {
        what,
        code: e.0 as i64,
    }
}

/// The caller's f32 workspace as the plan's bytes (`None` when the plan needs none).
fn workspace_bytes<'a>(
    workspace: &'a mut CudaBuffer<f32>,
    bytes: usize,
) -> Result<Option<CudaViewMut<'a, u8>>> {
    if bytes == 0 {
        return Ok(None);
    }
    check_len(
        "conv2d workspace",
        workspace.len,
        bytes.div_ceil(size_of::<f32>()),
    )?;
    // SAFETY: cuDNN uses the workspace as raw scratch; any bytes are a valid u8, and
    // `check_len` has shown the buffer holds `bytes`.
    Ok(unsafe { workspace.slice.transmute_mut::<u8>(bytes) })
}

/// Which of the three products a call is.
#[derive(Clone, Copy)]
pub(crate) enum ConvPass {
    Forward,
    BackwardData,
    BackwardFilter,
}

impl<T: ConvElement> ConvPlan<T> {
    /// Runs `pass` on device buffers of `T`. `a` and `b` are the pass's inputs (forward: x, w;
    /// backward data: dy, w; backward filter: x, dy), `out` its output (y, dx or dw), scaled as
    /// `out = alpha * result + beta * out`.
    ///
    /// # Safety
    /// The buffers hold at least the elements the plan's descriptors describe, in NCHW.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        &self,
        pass: ConvPass,
        workspace: Option<CudaViewMut<'_, u8>>,
        (alpha, beta): (T, T),
        a: &impl DevicePtr<T>,
        b: &impl DevicePtr<T>,
        out: &mut impl DevicePtrMut<T>,
    ) -> std::result::Result<(), CudnnError> {
        let mut workspace = workspace;
        let ws = workspace.as_mut();
        match pass {
            ConvPass::Forward => ConvForward {
                conv: &self.conv,
                x: &self.x,
                w: &self.w,
                y: &self.y,
            }
            .launch(self.forward, ws, (alpha, beta), a, b, out),
            ConvPass::BackwardData => ConvBackwardData {
                conv: &self.conv,
                dx: &self.x,
                w: &self.w,
                dy: &self.y,
            }
            .launch(self.backward_data, ws, (alpha, beta), out, b, a),
            ConvPass::BackwardFilter => ConvBackwardFilter {
                conv: &self.conv,
                x: &self.x,
                dw: &self.w,
                dy: &self.y,
            }
            .launch(self.backward_filter, ws, (alpha, beta), a, out, b),
        }
    }
}

/// Lengths of a pass's inputs and output in `shape`.
fn pass_lens(shape: &Conv2dShape, pass: ConvPass) -> (usize, usize, usize) {
    match pass {
        ConvPass::Forward => (shape.input_len(), shape.weight_len(), shape.output_len()),
        ConvPass::BackwardData => (shape.output_len(), shape.weight_len(), shape.input_len()),
        ConvPass::BackwardFilter => (shape.input_len(), shape.output_len(), shape.weight_len()),
    }
}

impl CudaBackend {
    /// Scratch elements cuDNN's plan for `shape` needs (0 with the direct kernels).
    pub(crate) fn conv_workspace_len(&self, shape: &Conv2dShape) -> usize {
        match &self.convolutions {
            ConvEngine::Direct => 0,
            ConvEngine::Cudnn(plans) => plans.workspace_len(shape),
            ConvEngine::CudnnBf16(plans) => plans.workspace_len(shape),
        }
    }

    /// Runs `pass` through cuDNN; `Ok(false)` when cuDNN has no plan for `shape` and the
    /// caller should use the direct kernels. The shape and buffers are already checked.
    /// The backward filter pass accumulates into `out`, the others write it.
    pub(crate) fn cudnn_conv(
        &self,
        pass: ConvPass,
        shape: &Conv2dShape,
        a: &CudaBuffer<f32>,
        b: &CudaBuffer<f32>,
        out: &mut CudaBuffer<f32>,
        workspace: &mut CudaBuffer<f32>,
    ) -> Result<bool> {
        let what = match pass {
            ConvPass::Forward => "conv2d_forward (cuDNN)",
            ConvPass::BackwardData => "conv2d_backward_data (cuDNN)",
            ConvPass::BackwardFilter => "conv2d_backward_filter (cuDNN)",
        };
        let accumulate = matches!(pass, ConvPass::BackwardFilter);
        let (a_len, b_len, out_len) = pass_lens(shape, pass);
        match &self.convolutions {
            ConvEngine::Direct => Ok(false),
            ConvEngine::Cudnn(plans) => {
                let Some(plan) = plans.plan(shape) else {
                    return Ok(false);
                };
                let ws = workspace_bytes(workspace, plan.workspace_bytes)?;
                let beta = if accumulate { 1.0 } else { 0.0 };
                let a_view = a.slice.slice(..a_len);
                let b_view = b.slice.slice(..b_len);
                let mut out_view = out.slice.slice_mut(..out_len);
                // SAFETY: the caller has checked the three buffers against `shape`, which the
                // plan's descriptors describe.
                unsafe { plan.run(pass, ws, (1.0, beta), &a_view, &b_view, &mut out_view) }
                    .map_err(cudnn_error(what))?;
                Ok(true)
            }
            ConvEngine::CudnnBf16(plans) => {
                let Some(plan) = plans.plan(shape) else {
                    return Ok(false);
                };
                let ws = workspace_bytes(workspace, plan.workspace_bytes)?;
                let a16 = self.bf16_copy(0, &a.slice, 0, a_len)?;
                let b16 = self.bf16_copy(1, &b.slice, 0, b_len)?;
                let mut out16 = self.bf16_slot(2, out_len)?;
                // SAFETY: the bf16 copies hold the checked inputs element for element, and the
                // result slot holds `out_len` elements, as the plan's descriptors describe.
                // bf16 results are written (beta 0) and accumulated in f32 below.
                unsafe { plan.run(pass, ws, (bf16::ONE, bf16::ZERO), &*a16, &*b16, &mut *out16) }
                    .map_err(cudnn_error(what))?;
                let mode = if accumulate {
                    Widen::Accumulate
                } else {
                    Widen::Write
                };
                let mut out_view = out.slice.slice_mut(..out_len);
                self.bf16_widen(&out16, &mut out_view, out_len, mode)?;
                Ok(true)
            }
        }
    }
}
