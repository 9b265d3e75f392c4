//! Convolutions through cuDNN, where its library is present: one plan per shape (the tensor,
//! filter and convolution descriptors, and for each of the three passes every algorithm of
//! cuDNN's heuristics that may run, ranked by `conv_algorithms`), made on first use and kept,
//! so a training step creates nothing. A pass launches its algorithms in rank order until one
//! runs. A shape with no algorithm, a pass whose every algorithm cuDNN refuses, or a machine
//! without cuDNN (9 or later) uses the direct kernels of `kernels/conv.cu` instead; nothing in
//! this path panics on cuDNN's answers.
//!
//! fp32 plans forbid tensor cores (`CUDNN_FMA_MATH`: cuDNN's default would round to TF32 on
//! Ampere and later, and algorithms the heuristics list with another math type are dropped);
//! TF32 plans allow them; bf16 plans take bf16 copies of their inputs and give a bf16 result
//! that is widened back, with f32 accumulation inside cuDNN.
//!
//! The handle and descriptors are cuDNN's raw objects, owned here, not cudarc's `Cudnn`
//! wrappers: those keep the raw handle private, so the heuristics' ranked list is out of reach
//! through them (their `pick_algorithm` keeps the first pick and asserts that there is one),
//! `Cudnn::new` unwraps the context's binding, and their `Drop`s unwrap cuDNN's status.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::ptr;
use std::rc::Rc;
use std::sync::Arc;

use cudarc::cudnn::result::{self, CudnnError};
use cudarc::cudnn::sys::{
    self, cudnnConvolutionBwdDataAlgo_t, cudnnConvolutionBwdFilterAlgo_t,
    cudnnConvolutionFwdAlgo_t, cudnnConvolutionMode_t, cudnnDeterminism_t, cudnnMathType_t,
    cudnnStatus_t, cudnnTensorFormat_t,
};
use cudarc::cudnn::CudnnDataType;
use cudarc::driver::{CudaStream, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr};
use dscl_core::desc::Conv2dShape;
use dscl_core::error::check_len;
use dscl_core::{Error, Result};
use half::bf16;

use crate::backend::{CudaBackend, CudaBuffer};
use crate::conv_algorithms::{launch_ranked, rank, Candidate, Launched, WORKSPACE_CAP_BYTES};
use crate::ops::bf16::Widen;
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
        // cudarc reads every status as its cuDNN 9 enum: an older library's error codes are
        // no value of it, and this path expects errors (refused algorithms are tried past).
        if result::get_version() < 9_00_00 {
            return (
                ConvEngine::Direct,
                "direct convolutions: cuDNN older than 9",
            );
        }
        // cuDNN starts on the thread's current context.
        if stream.context().bind_to_thread().is_err() {
            return (
                ConvEngine::Direct,
                "direct convolutions: the CUDA context could not be made current",
            );
        }
        let Ok(handle) = Handle::new(stream) else {
            return (
                ConvEngine::Direct,
                "direct convolutions: cuDNN did not start",
            );
        };
        let engine = match precision {
            Precision::Fp32 => ConvEngine::Cudnn(CudnnConvolutions::new(
                handle,
                cudnnMathType_t::CUDNN_FMA_MATH,
            )),
            Precision::Tf32 => ConvEngine::Cudnn(CudnnConvolutions::new(
                handle,
                cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
            )),
            Precision::Bf16 => ConvEngine::CudnnBf16(CudnnConvolutions::new(
                handle,
                cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
            )),
        };
        (engine, "cuDNN convolutions")
    }
}

/// A cuDNN handle whose work goes to the backend's stream.
struct Handle {
    raw: sys::cudnnHandle_t,
    stream: Arc<CudaStream>,
}

impl Handle {
    /// Needs the stream's context current on this thread.
    fn new(stream: &Arc<CudaStream>) -> std::result::Result<Self, CudnnError> {
        let handle = Handle {
            raw: result::create_handle()?,
            stream: stream.clone(),
        };
        // SAFETY: the handle is live, and the stream outlives it (`handle.stream`). On an error
        // the handle is destroyed by its drop.
        unsafe { result::set_stream(handle.raw, stream.cu_stream().cast()) }?;
        Ok(handle)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: made by `create_handle` and destroyed only here. A handle that fails to free
        // at teardown leaves nothing to recover, and a panic in `drop` aborts when it comes
        // during an unwind, so the status is let go.
        let _ = unsafe { result::destroy_handle(self.raw) };
    }
}

/// A cuDNN descriptor, destroyed on drop (the status let go, as for [`Handle`]).
struct Descriptor<P: Copy> {
    raw: P,
    destroy: unsafe fn(P) -> std::result::Result<(), CudnnError>,
}

impl<P: Copy> Drop for Descriptor<P> {
    fn drop(&mut self) {
        // SAFETY: `raw` was made by the creator matching `destroy` and is destroyed only here.
        let _ = unsafe { (self.destroy)(self.raw) };
    }
}

type TensorDescriptor = Descriptor<sys::cudnnTensorDescriptor_t>;
type FilterDescriptor = Descriptor<sys::cudnnFilterDescriptor_t>;
type ConvDescriptor = Descriptor<sys::cudnnConvolutionDescriptor_t>;

fn tensor_descriptor(
    data_type: sys::cudnnDataType_t,
    dims: [c_int; 4],
) -> std::result::Result<TensorDescriptor, CudnnError> {
    let d = Descriptor {
        raw: result::create_tensor_descriptor()?,
        destroy: result::destroy_tensor_descriptor,
    };
    // SAFETY: `d` is live.
    unsafe {
        result::set_tensor4d_descriptor(
            d.raw,
            cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
            data_type,
            dims,
        )
    }?;
    Ok(d)
}

fn filter_descriptor(
    data_type: sys::cudnnDataType_t,
    dims: [c_int; 4],
) -> std::result::Result<FilterDescriptor, CudnnError> {
    let d = Descriptor {
        raw: result::create_filter_descriptor()?,
        destroy: result::destroy_filter_descriptor,
    };
    // SAFETY: `d` is live.
    unsafe {
        result::set_filter4d_descriptor(
            d.raw,
            data_type,
            cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
            dims,
        )
    }?;
    Ok(d)
}

/// A square cross-correlation, f32 arithmetic at `math`.
fn conv_descriptor(
    pad: c_int,
    stride: c_int,
    math: cudnnMathType_t,
) -> std::result::Result<ConvDescriptor, CudnnError> {
    let d = Descriptor {
        raw: result::create_convolution_descriptor()?,
        destroy: result::destroy_convolution_descriptor,
    };
    // SAFETY: `d` is live.
    unsafe {
        result::set_convolution2d_descriptor(
            d.raw,
            pad,
            pad,
            stride,
            stride,
            1,
            1,
            cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            f32::DATA_TYPE,
        )?;
        result::set_convolution_math_type(d.raw, math)?;
    }
    Ok(d)
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
    plans: RefCell<HashMap<ShapeKey, Option<Rc<ConvPlan<T>>>>>,
    math: cudnnMathType_t,
    handle: Handle,
}

impl<T: ConvElement> CudnnConvolutions<T> {
    fn new(handle: Handle, math: cudnnMathType_t) -> Self {
        CudnnConvolutions {
            plans: RefCell::new(HashMap::new()),
            math,
            handle,
        }
    }

    /// The plan for `shape`, made on first use.
    pub(crate) fn plan(&self, shape: &Conv2dShape) -> Option<Rc<ConvPlan<T>>> {
        let key = shape_key(shape);
        if let Some(known) = self.plans.borrow().get(&key) {
            return known.clone();
        }
        let made = ConvPlan::new(&self.handle, shape, self.math)
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

/// An algorithm with the math type the heuristics rated it at: since cuDNN 7.4 the pair, not
/// the algorithm alone, decides whether tensor-core kernels run (and what scratch they need),
/// so the descriptor takes this math type before each launch.
#[derive(Clone, Copy)]
struct Algo<A> {
    id: A,
    math: cudnnMathType_t,
}

/// What the three heuristics' result structs share.
trait AlgoPerf: Copy {
    type Id: Copy;
    fn candidate(&self) -> Candidate<Algo<Self::Id>>;
}

macro_rules! algo_perf {
    ($perf:ty, $id:ty) => {
        impl AlgoPerf for $perf {
            type Id = $id;
            fn candidate(&self) -> Candidate<Algo<$id>> {
                Candidate {
                    algo: Algo {
                        id: self.algo,
                        math: self.mathType,
                    },
                    ok: self.status == cudnnStatus_t::CUDNN_STATUS_SUCCESS,
                    workspace_bytes: self.memory,
                    deterministic: self.determinism == cudnnDeterminism_t::CUDNN_DETERMINISTIC,
                    tensor_op_math: self.mathType != cudnnMathType_t::CUDNN_FMA_MATH,
                }
            }
        }
    };
}

algo_perf!(
    sys::cudnnConvolutionFwdAlgoPerf_t,
    cudnnConvolutionFwdAlgo_t
);
algo_perf!(
    sys::cudnnConvolutionBwdDataAlgoPerf_t,
    cudnnConvolutionBwdDataAlgo_t
);
algo_perf!(
    sys::cudnnConvolutionBwdFilterAlgoPerf_t,
    cudnnConvolutionBwdFilterAlgo_t
);

const FWD_COUNT: usize = cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_COUNT as usize;
const BWD_DATA_COUNT: usize =
    cudnnConvolutionBwdDataAlgo_t::CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT as usize;
const BWD_FILTER_COUNT: usize =
    cudnnConvolutionBwdFilterAlgo_t::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT as usize;

/// The heuristics' list for one pass, in their order: `query` asks cuDNN for up to its first
/// argument results, writing their count and the results through the two pointers, which
/// have room for that many. An error, or a count of 0, is no candidate.
fn heuristics<P: AlgoPerf, const N: usize>(
    query: impl FnOnce(c_int, *mut c_int, *mut P) -> std::result::Result<(), CudnnError>,
) -> Vec<Candidate<Algo<P::Id>>> {
    // SAFETY: all-zero bytes are a valid result struct (each enum field has a variant 0).
    let mut perf: [P; N] = [unsafe { std::mem::zeroed() }; N];
    let mut count: c_int = 0;
    // N is one of cuDNN's algorithm counts (at most 8).
    if query(N as c_int, &mut count, perf.as_mut_ptr()).is_err() {
        return Vec::new();
    }
    let count = usize::try_from(count).map_or(0, |count| count.min(N));
    perf[..count].iter().map(AlgoPerf::candidate).collect()
}

/// One pass's algorithms, ranked, and the rank that last ran.
struct PassAlgorithms<A> {
    ranked: Vec<Algo<A>>,
    winner: Cell<usize>,
    /// The most scratch any of them needs.
    workspace_bytes: usize,
}

impl<A: Copy> PassAlgorithms<A> {
    fn new(candidates: Vec<Candidate<Algo<A>>>, fp32: bool) -> Self {
        let kept = rank(candidates, WORKSPACE_CAP_BYTES, fp32);
        PassAlgorithms {
            workspace_bytes: kept.iter().map(|c| c.workspace_bytes).max().unwrap_or(0),
            ranked: kept.iter().map(|c| c.algo).collect(),
            winner: Cell::new(0),
        }
    }

    /// Some algorithm is left to try (none has been offered, or all have failed, otherwise).
    fn may_run(&self) -> bool {
        self.winner.get() < self.ranked.len()
    }

    fn launch<E>(
        &self,
        may_try_next: impl Fn(&E) -> bool,
        launch: impl FnMut(Algo<A>) -> std::result::Result<(), E>,
    ) -> Launched<E> {
        launch_ranked(&self.ranked, &self.winner, may_try_next, launch)
    }
}

/// Descriptors and ranked algorithms for one shape.
pub(crate) struct ConvPlan<T: ConvElement> {
    x: TensorDescriptor,
    w: FilterDescriptor,
    y: TensorDescriptor,
    conv: ConvDescriptor,
    forward: PassAlgorithms<cudnnConvolutionFwdAlgo_t>,
    backward_data: PassAlgorithms<cudnnConvolutionBwdDataAlgo_t>,
    backward_filter: PassAlgorithms<cudnnConvolutionBwdFilterAlgo_t>,
    /// The most scratch of every algorithm kept, so that whichever runs fits the workspace
    /// the caller sized from `conv2d_workspace_len`.
    workspace_bytes: usize,
    element: PhantomData<T>,
}

/// Why a plan could not be made: cuDNN refused a descriptor, a size exceeds its `int`, or no
/// pass has an algorithm.
enum PlanError {
    Cudnn,
    TooLarge,
    NoAlgorithm,
}

impl From<CudnnError> for PlanError {
    fn from(_: CudnnError) -> Self {
        PlanError::Cudnn
    }
}

impl<T: ConvElement> ConvPlan<T> {
    fn new(
        handle: &Handle,
        s: &Conv2dShape,
        math: cudnnMathType_t,
    ) -> std::result::Result<Self, PlanError> {
        let int = |x: usize| c_int::try_from(x).map_err(|_| PlanError::TooLarge);
        let x = tensor_descriptor(
            T::DATA_TYPE,
            [
                int(s.batch)?,
                int(s.in_channels)?,
                int(s.in_height)?,
                int(s.in_width)?,
            ],
        )?;
        let w = filter_descriptor(
            T::DATA_TYPE,
            [
                int(s.out_channels)?,
                int(s.in_channels)?,
                int(s.kernel_h)?,
                int(s.kernel_w)?,
            ],
        )?;
        let y = tensor_descriptor(
            T::DATA_TYPE,
            [
                int(s.batch)?,
                int(s.out_channels)?,
                int(s.out_height())?,
                int(s.out_width())?,
            ],
        )?;
        let conv = conv_descriptor(int(s.padding)?, int(s.stride)?, math)?;
        let (h, x_raw, w_raw, y_raw, c_raw) = (handle.raw, x.raw, w.raw, y.raw, conv.raw);
        // SAFETY (the three queries): the handle and descriptors are live, and `heuristics`
        // passes room for the number of results it asks for.
        let forward = heuristics::<_, FWD_COUNT>(
            |n, count, perf: *mut sys::cudnnConvolutionFwdAlgoPerf_t| unsafe {
                result::get_convolution_forward_algorithm(
                    h, x_raw, w_raw, c_raw, y_raw, n, count, perf,
                )
            },
        );
        let backward_data = heuristics::<_, BWD_DATA_COUNT>(
            |n, count, perf: *mut sys::cudnnConvolutionBwdDataAlgoPerf_t| unsafe {
                result::get_convolution_backward_data_algorithm(
                    h, w_raw, y_raw, c_raw, x_raw, n, count, perf,
                )
            },
        );
        let backward_filter = heuristics::<_, BWD_FILTER_COUNT>(
            |n, count, perf: *mut sys::cudnnConvolutionBwdFilterAlgoPerf_t| unsafe {
                result::get_convolution_backward_filter_algorithm(
                    h, x_raw, y_raw, c_raw, w_raw, n, count, perf,
                )
            },
        );
        let fp32 = math == cudnnMathType_t::CUDNN_FMA_MATH;
        let forward = PassAlgorithms::new(forward, fp32);
        let backward_data = PassAlgorithms::new(backward_data, fp32);
        let backward_filter = PassAlgorithms::new(backward_filter, fp32);
        if forward.ranked.is_empty()
            && backward_data.ranked.is_empty()
            && backward_filter.ranked.is_empty()
        {
            return Err(PlanError::NoAlgorithm);
        }
        let workspace_bytes = forward
            .workspace_bytes
            .max(backward_data.workspace_bytes)
            .max(backward_filter.workspace_bytes);
        Ok(ConvPlan {
            x,
            w,
            y,
            conv,
            forward,
            backward_data,
            backward_filter,
            workspace_bytes,
            element: PhantomData,
        })
    }
}

fn cudnn_error(what: &'static str) -> impl Fn(CudnnError) -> Error {
    move |e| Error::Device {
        what,
        code: e.0 as i64,
    }
}

/// cuDNN refused the launch: a bad parameter (its 2xxx statuses) or an unsupported case
/// (3xxx). cuDNN reports both from its argument and support checks, before it enqueues any
/// work, so the output is as it was.
fn refused(e: &CudnnError) -> bool {
    matches!(e.0 as u32 / 1000, 2 | 3)
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
    /// Some algorithm of `pass` is left to try.
    fn may_run(&self, pass: ConvPass) -> bool {
        match pass {
            ConvPass::Forward => self.forward.may_run(),
            ConvPass::BackwardData => self.backward_data.may_run(),
            ConvPass::BackwardFilter => self.backward_filter.may_run(),
        }
    }

    /// Runs `pass` on device buffers of `T`, trying its algorithms in rank order. `a` and `b`
    /// are the pass's inputs (forward: x, w; backward data: dy, w; backward filter: x, dy),
    /// `out` its output (y, dx or dw), scaled as `out = alpha * result + beta * out` (cuDNN
    /// takes f32 factors for f32 and bf16 data alike).
    ///
    /// After a refused launch (see [`refused`]) `out` is untouched, so the next algorithm is
    /// tried whatever `beta`. After any other error the launch may have written part of `out`:
    /// with `beta` 0 the next algorithm (or the direct kernels) overwrites it, so the search
    /// goes on; with `beta` 1 another launch would add to that part, so the error is returned
    /// (`Launched::Stopped`). When every algorithm was refused, `out` is as the caller left
    /// it, ready for the direct kernels to write or accumulate.
    ///
    /// # Safety
    /// The buffers hold at least the elements the plan's descriptors describe, in NCHW, and
    /// `workspace` is on the handle's stream.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        &self,
        handle: &Handle,
        pass: ConvPass,
        workspace: Option<CudaViewMut<'_, u8>>,
        (alpha, beta): (f32, f32),
        a: &impl DevicePtr<T>,
        b: &impl DevicePtr<T>,
        out: &mut impl DevicePtrMut<T>,
    ) -> Launched<CudnnError> {
        let stream: &CudaStream = &handle.stream;
        // The guards order the launches after earlier work on the buffers, and later work after
        // them, when dropped at the end.
        let (a, _a_used) = a.device_ptr(stream);
        let (b, _b_used) = b.device_ptr(stream);
        let (out, _out_used) = out.device_ptr_mut(stream);
        let mut workspace = workspace;
        let ws_bytes = workspace.as_ref().map_or(0, |ws| ws.len());
        let (ws, _ws_used) = workspace
            .as_mut()
            .map(|ws| ws.device_ptr_mut(stream))
            .unzip();
        let ws = ws.map_or(ptr::null_mut(), |ws| ws as *mut c_void);
        let (a, b, out) = (a as *const c_void, b as *const c_void, out as *mut c_void);
        let alpha = ptr::from_ref(&alpha).cast::<c_void>();
        let may_try_next = |e: &CudnnError| beta == 0.0 || refused(e);
        let (h, x, w, y, conv) = (
            handle.raw,
            self.x.raw,
            self.w.raw,
            self.y.raw,
            self.conv.raw,
        );
        let beta = ptr::from_ref(&beta).cast::<c_void>();
        // SAFETY (the three launches): the handle and descriptors are live, the caller vouches
        // for the buffers, and the workspace holds `ws_bytes`, the most any kept algorithm
        // needs.
        match pass {
            ConvPass::Forward => self.forward.launch(may_try_next, |algo| unsafe {
                result::set_convolution_math_type(conv, algo.math)?;
                result::convolution_forward(
                    h, alpha, x, a, w, b, conv, algo.id, ws, ws_bytes, beta, y, out,
                )
            }),
            ConvPass::BackwardData => self.backward_data.launch(may_try_next, |algo| unsafe {
                result::set_convolution_math_type(conv, algo.math)?;
                result::convolution_backward_data(
                    h, alpha, w, b, y, a, conv, algo.id, ws, ws_bytes, beta, x, out,
                )
            }),
            ConvPass::BackwardFilter => self.backward_filter.launch(may_try_next, |algo| unsafe {
                result::set_convolution_math_type(conv, algo.math)?;
                result::convolution_backward_filter(
                    h, alpha, x, a, y, b, conv, algo.id, ws, ws_bytes, beta, w, out,
                )
            }),
        }
    }
}

/// `cudnn_conv`'s answer for what a launch came to.
fn launched(launched: Launched<CudnnError>, what: &'static str) -> Result<bool> {
    match launched {
        Launched::Ran(_) => Ok(true),
        Launched::NoneRan => Ok(false),
        Launched::Stopped(e) => Err(cudnn_error(what)(e)),
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

    /// Runs `pass` through cuDNN; `Ok(false)` when cuDNN has no plan for `shape`, or none of
    /// the pass's algorithms would run, and the caller should use the direct kernels (the
    /// accumulating pass has then left `out` untouched; see `ConvPlan::run`). The shape and
    /// buffers are already checked. The backward filter pass accumulates into `out`, the
    /// others write it.
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
                let Some(plan) = plans.plan(shape).filter(|plan| plan.may_run(pass)) else {
                    return Ok(false);
                };
                let ws = workspace_bytes(workspace, plan.workspace_bytes)?;
                let beta = if accumulate { 1.0 } else { 0.0 };
                let a_view = a.slice.slice(..a_len);
                let b_view = b.slice.slice(..b_len);
                let mut out_view = out.slice.slice_mut(..out_len);
                // SAFETY: the caller has checked the three buffers against `shape`, which the
                // plan's descriptors describe; all are on the backend's stream.
                let outcome = unsafe {
                    plan.run(
                        &plans.handle,
                        pass,
                        ws,
                        (1.0, beta),
                        &a_view,
                        &b_view,
                        &mut out_view,
                    )
                };
                launched(outcome, what)
            }
            ConvEngine::CudnnBf16(plans) => {
                let Some(plan) = plans.plan(shape).filter(|plan| plan.may_run(pass)) else {
                    return Ok(false);
                };
                let ws = workspace_bytes(workspace, plan.workspace_bytes)?;
                let a16 = self.bf16_copy(0, &a.slice, 0, a_len)?;
                let b16 = self.bf16_copy(1, &b.slice, 0, b_len)?;
                let mut out16 = self.bf16_slot(2, out_len)?;
                // SAFETY: the bf16 copies hold the checked inputs element for element, and the
                // result slot holds `out_len` elements, as the plan's descriptors describe.
                // bf16 results are written (beta 0), so every failed algorithm may be tried
                // past, and accumulated in f32 below.
                let outcome = unsafe {
                    plan.run(
                        &plans.handle,
                        pass,
                        ws,
                        (1.0, 0.0),
                        &*a16,
                        &*b16,
                        &mut *out16,
                    )
                };
                if !launched(outcome, what)? {
                    return Ok(false);
                }
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
