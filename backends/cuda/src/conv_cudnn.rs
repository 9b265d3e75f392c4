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
//!
//! This module makes the plans; `passes` runs them and holds the backend's entry points.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_int;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use cudarc::cudnn::result::{self, CudnnError};
use cudarc::cudnn::sys::{
    self, cudnnConvolutionBwdDataAlgo_t, cudnnConvolutionBwdFilterAlgo_t,
    cudnnConvolutionFwdAlgo_t, cudnnConvolutionMode_t, cudnnDeterminism_t, cudnnMathType_t,
    cudnnStatus_t, cudnnTensorFormat_t,
};
use cudarc::cudnn::CudnnDataType;
use cudarc::driver::{CudaStream, DeviceRepr};
use dscl_core::desc::Conv2dShape;
use half::bf16;

use crate::conv_algorithms::{launch_ranked, rank, Candidate, Launched, WORKSPACE_CAP_BYTES};
use crate::precision::Precision;

mod passes;

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

/// Which of the three products a call is.
#[derive(Clone, Copy)]
pub(crate) enum ConvPass {
    Forward,
    BackwardData,
    BackwardFilter,
}
