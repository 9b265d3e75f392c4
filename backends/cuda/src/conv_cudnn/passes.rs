//! Running the passes of a cuDNN convolution plan: a plan launches one pass's algorithms in
//! rank order (`ConvPlan::run`), and the backend's entry points (`cudnn_conv`,
//! `conv_workspace_len`) find the plan for a shape, hand it the caller's workspace and
//! buffers (as bf16 copies on a bf16 engine, widened back after), and say whether cuDNN ran,
//! so that the caller knows when to use the direct kernels instead. Kept apart from the
//! making of the plans (the parent module), so that the rules for trying past a failed
//! launch, and what such a launch leaves in the output, read in one place.

use std::ffi::c_void;
use std::ptr;

use cudarc::cudnn::result::{self, CudnnError};
use cudarc::driver::{CudaStream, CudaViewMut, DevicePtr, DevicePtrMut};
use dscl_core::desc::Conv2dShape;
use dscl_core::error::check_len;
use dscl_core::{Error, Result};

use super::{ConvElement, ConvEngine, ConvPass, ConvPlan, Handle};
use crate::backend::{CudaBackend, CudaBuffer};
use crate::conv_algorithms::Launched;
use crate::ops::bf16::Widen;

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
