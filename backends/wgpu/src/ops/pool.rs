//! Max pooling (PyTorch semantics: padding never selected, first maximum in row-major window
//! order wins, a NaN in the window is selected and recorded) and global average pooling.
//!
//! Max-pool backward is a gather, one invocation per input element over the few outputs whose
//! windows cover it, so overlapping windows need no float atomics and the sum is deterministic.

use dscl_core::backend::PoolOps;
use dscl_core::desc::{check_global_pool, PoolShape};
use dscl_core::error::ensure;
use dscl_core::Result;

use super::{binding_align, for_image_runs, groups, image_runs, word};
use crate::buffer::Window;
use crate::kernel::kernel;
use crate::{WgpuBackend, WgpuBuffer};

const MAX: &str = include_str!("../shaders/pool_max.wgsl");
const MAX_BACKWARD: &str = include_str!("../shaders/pool_max_backward.wgsl");
const AVG: &str = include_str!("../shaders/pool_avg.wgsl");

kernel!(
    MAX_POOL_FORWARD,
    MAX,
    "max_pool_forward",
    [Read, ReadWrite, ReadWrite],
    256
);
kernel!(
    MAX_POOL_BACKWARD,
    MAX_BACKWARD,
    "max_pool_backward",
    [Read, Read, ReadWrite],
    256
);
kernel!(GAP_FORWARD, AVG, "gap_forward", [Read, ReadWrite], 64);
kernel!(GAP_BACKWARD, AVG, "gap_backward", [Read, ReadWrite], 256);

/// The geometry words both max-pool kernels read after their element count (`pu(1..=7)`).
/// Window arithmetic in the shaders adds padding, kernel and stride to a coordinate, so that
/// sum must fit in 32 bits too.
fn geometry(what: &'static str, shape: &PoolShape) -> Result<[u32; 7]> {
    let reach = shape
        .in_height
        .max(shape.in_width)
        .saturating_add(shape.padding.saturating_mul(2))
        .saturating_add(shape.kernel)
        .saturating_add(shape.stride);
    word(what, reach)?;
    word(what, shape.input_len())?;
    word(what, shape.output_len())?;
    Ok([
        word(what, shape.in_height)?,
        word(what, shape.in_width)?,
        word(what, shape.out_height())?,
        word(what, shape.out_width())?,
        word(what, shape.kernel)?,
        word(what, shape.stride)?,
        word(what, shape.padding)?,
    ])
}

/// A max-pool kernel's words: its item count, the geometry, then the run's words.
fn max_pool_words(
    what: &'static str,
    count: usize,
    geometry: [u32; 7],
    run: &[usize],
) -> Result<heapless::Vec<u32, 12>> {
    let too_many = || dscl_core::Error::InvalidArgument {
        what,
        reason: "more kernel words than a max-pool kernel holds (dscl-wgpu bug)",
    };
    let mut words = heapless::Vec::new();
    words.push(word(what, count)?).map_err(|_| too_many())?;
    words.extend_from_slice(&geometry).map_err(|_| too_many())?;
    for &v in run {
        words.push(word(what, v)?).map_err(|_| too_many())?;
    }
    Ok(words)
}

/// Elements of one image of a pooling's input and of its output (`shape.check` has shown that
/// the whole tensors' lengths fit).
fn image_lens(shape: &PoolShape) -> (usize, usize) {
    (
        shape.channels * shape.in_height * shape.in_width,
        shape.channels * shape.out_height() * shape.out_width(),
    )
}

/// One run of whole images of a max-pool pass, as both kernels bind it.
struct MaxPoolRun<'a> {
    /// Input and output elements in the run.
    inputs: usize,
    outputs: usize,
    /// The whole output's index of the run's first output element.
    first_output: usize,
    /// Windows of the input-shaped and the output-shaped tensor, each with the element the run
    /// starts at.
    input: (Window<'a>, usize),
    output: (Window<'a>, usize),
    /// The output's range of argmax: 4-byte elements too, so the output's offset holds for it.
    argmax: Window<'a>,
    /// The pass's geometry words, the same in every run.
    geometry: [u32; 7],
}

/// The runs of whole images that fit a binding, in order.
fn max_pool_runs<'a>(
    be: &WgpuBackend,
    what: &'static str,
    shape: &PoolShape,
    input: &'a WgpuBuffer<f32>,
    output: &'a WgpuBuffer<f32>,
    argmax: &'a WgpuBuffer<u32>,
) -> Result<impl Iterator<Item = MaxPoolRun<'a>>> {
    let geometry = geometry(what, shape)?;
    let (image_in, image_out) = image_lens(shape);
    let align = binding_align(be);
    let runs = image_runs(be, what, shape.batch, &[image_in, image_out])?;
    Ok(runs.map(move |(first, count)| {
        let first_output = first * image_out;
        let outputs = count * image_out;
        MaxPoolRun {
            inputs: count * image_in,
            outputs,
            first_output,
            input: input.window(first * image_in, count * image_in, align),
            output: output.window(first_output, outputs, align),
            argmax: argmax.window(first_output, outputs, align).0,
            geometry,
        }
    }))
}

impl PoolOps for WgpuBackend {
    fn max_pool2d_forward(
        &self,
        shape: &PoolShape,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        argmax: &mut Self::IndexBuffer,
    ) -> Result<()> {
        shape.check(x.len, y.len, argmax.len)?;
        ensure(
            shape
                .in_height
                .checked_mul(shape.in_width)
                .is_some_and(|p| u32::try_from(p).is_ok()),
            "max_pool2d",
            "an input plane must have fewer than 2^32 elements (u32 argmax)",
        )?;
        if shape.output_len() == 0 {
            return Ok(());
        }
        let what = "max_pool2d_forward";
        for run in max_pool_runs(self, what, shape, x, y, argmax)? {
            let ((x, x_at), (y, y_at)) = (run.input, run.output);
            // Faults name the output's index in the whole tensor.
            let words = max_pool_words(
                what,
                run.outputs,
                run.geometry,
                &[x_at, y_at, run.first_output],
            )?;
            self.rec().dispatch(
                &MAX_POOL_FORWARD,
                &[x, y, run.argmax],
                &words,
                groups(run.outputs, MAX_POOL_FORWARD.workgroup)?,
            )?;
        }
        Ok(())
    }

    fn max_pool2d_backward(
        &self,
        shape: &PoolShape,
        grad_y: &Self::Buffer,
        argmax: &Self::IndexBuffer,
        grad_x: &mut Self::Buffer,
    ) -> Result<()> {
        shape.check(grad_x.len, grad_y.len, argmax.len)?;
        if shape.input_len() == 0 {
            return Ok(());
        }
        let what = "max_pool2d_backward";
        for run in max_pool_runs(self, what, shape, grad_x, grad_y, argmax)? {
            let ((grad_x, x_at), (grad_y, y_at)) = (run.input, run.output);
            let words = max_pool_words(what, run.inputs, run.geometry, &[y_at, x_at])?;
            self.rec().dispatch(
                &MAX_POOL_BACKWARD,
                &[grad_y, run.argmax, grad_x],
                &words,
                groups(run.inputs, MAX_POOL_BACKWARD.workgroup)?,
            )?;
        }
        Ok(())
    }

    fn global_avg_pool_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        let what = "global_avg_pool";
        let (planes, len) = check_global_pool(what, x.len, y.len, batch, channels, spatial)?;
        if planes == 0 {
            return Ok(());
        }
        word(what, len)?;
        let image = channels * spatial;
        let align = binding_align(self);
        for_image_runs(self, what, batch, &[image, channels], |first, count| {
            let (x, x_at) = x.window(first * image, count * image, align);
            let (y, y_at) = y.window(first * channels, count * channels, align);
            let planes = count * channels;
            self.rec().dispatch(
                &GAP_FORWARD,
                &[x, y],
                &[
                    word(what, planes)?,
                    word(what, spatial)?,
                    word(what, x_at)?,
                    word(what, y_at)?,
                ],
                groups(planes, 1)?,
            )
        })
    }

    fn global_avg_pool_backward(
        &self,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        let what = "global_avg_pool_backward";
        let (_, len) = check_global_pool(what, grad_x.len, grad_y.len, batch, channels, spatial)?;
        if len == 0 {
            return Ok(());
        }
        let image = channels * spatial;
        let align = binding_align(self);
        for_image_runs(self, what, batch, &[image, channels], |first, count| {
            let (grad_y, y_at) = grad_y.window(first * channels, count * channels, align);
            let (grad_x, x_at) = grad_x.window(first * image, count * image, align);
            let elements = count * image;
            self.rec().dispatch(
                &GAP_BACKWARD,
                &[grad_y, grad_x],
                &[
                    word(what, elements)?,
                    word(what, spatial)?,
                    word(what, y_at)?,
                    word(what, x_at)?,
                ],
                groups(elements, GAP_BACKWARD.workgroup)?,
            )
        })
    }
}
