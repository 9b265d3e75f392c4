//! conv2d forward and both backwards as implicit GEMMs (im2col is never materialised).
//!
//! - forward: [out_c] x [batch * out_h * out_w], reduced over in_c * kh * kw.
//! - backward-data: per stride phase, [in_c] x [that phase's input pixels], reduced over the
//!   out_c * (taps that reach the phase); a strided convolution spends nothing on the taps it
//!   skips.
//! - backward-filter: [out_c] x [in_c * kh * kw], reduced over batch * out_h * out_w. That
//!   output is small and the reduction long, so it is split into slices that write partial
//!   tiles to the workspace, summed into grad_weight by a second kernel in a fixed order
//!   (results do not depend on scheduling).
//!
//! A workgroup owns 16 rows x 256 columns; each invocation keeps 16 rows x 4 columns in
//! registers, gathers its own columns' values of the im2col-like operand straight from the
//! tensor, and reads the other operand from workgroup memory, where the workgroup stages 64
//! reduction indices of it at a time (see `shaders/conv_tile.wgsl` for why this split).

use dscl_core::backend::ConvOps;
use dscl_core::desc::Conv2dShape;
use dscl_core::error::check_len;
use dscl_core::{Error, Result};

use super::{binding_align, groups, image_runs, word};
use crate::buffer::Window;
use crate::kernel::kernel;
use crate::recorder::MAX_GROUPS_PER_DIM;
use crate::{WgpuBackend, WgpuBuffer};

/// Rows and columns of a workgroup's tile (ROWS, COLS in `conv_tile.wgsl`).
const ROWS: usize = 16;
const COLS: usize = 256;

kernel!(
    FORWARD,
    concat!(
        include_str!("../shaders/conv_tile.wgsl"),
        include_str!("../shaders/conv_forward.wgsl")
    ),
    "conv2d_forward",
    [Read, Read, ReadWrite],
    64
);
kernel!(
    DATA,
    concat!(
        include_str!("../shaders/conv_tile.wgsl"),
        include_str!("../shaders/conv_data.wgsl")
    ),
    "conv2d_backward_data",
    [Read, Read, ReadWrite],
    64
);
kernel!(
    FILTER,
    concat!(
        include_str!("../shaders/conv_tile.wgsl"),
        include_str!("../shaders/conv_filter.wgsl")
    ),
    "conv2d_backward_filter",
    [Read, Read, ReadWrite],
    64
);
kernel!(
    FILTER_REDUCE,
    include_str!("../shaders/conv_reduce.wgsl"),
    "conv2d_filter_reduce",
    [Read, ReadWrite],
    256
);

/// Workgroups a backward-filter dispatch aims for: enough to fill a large GPU.
const FILTER_TARGET_GROUPS: usize = 256;
/// Fewest reduction indices per slice, so a slice's partial is worth its workspace traffic.
const FILTER_MIN_SLICE: usize = 2048;
/// Most workspace elements the slices may take (64 MiB).
const FILTER_MAX_WORKSPACE: usize = 1 << 24;
/// Invocations per workgroup of the three passes (THREADS in `conv_tile.wgsl`).
const THREADS: usize = 64;

/// How backward-filter splits its reduction.
#[derive(Clone, Copy)]
struct FilterPlan {
    /// Independent groups per workgroup (1, 2 or 4), each on COLS / groups columns.
    groups: usize,
    /// Reduction indices per slice (a multiple of THREADS / groups).
    chunk: usize,
    /// Workgroups along z; slices = z * groups.
    z: usize,
}

impl FilterPlan {
    fn new(shape: &Conv2dShape) -> Option<Self> {
        shape.check_shape().ok()?;
        let m = shape.out_channels;
        let n = shape
            .in_channels
            .checked_mul(shape.kernel_h)?
            .checked_mul(shape.kernel_w)?;
        let q = shape
            .batch
            .checked_mul(shape.out_height())?
            .checked_mul(shape.out_width())?;
        let weight_len = m.checked_mul(n)?;
        let max_slices = (q / FILTER_MIN_SLICE)
            .min(FILTER_MAX_WORKSPACE / weight_len.max(1))
            .min(MAX_GROUPS_PER_DIM as usize)
            .max(1);
        // The narrowest column tiles that waste the fewest columns (each group takes a slice).
        let groups = [1usize, 2, 4]
            .into_iter()
            .filter(|&g| g <= max_slices)
            .min_by_key(|&g| (n.div_ceil(COLS / g).saturating_mul(COLS / g), g))
            .unwrap_or(1);
        let tiles = m
            .div_ceil(ROWS)
            .saturating_mul(n.div_ceil(COLS / groups))
            .max(1);
        let slices = FILTER_TARGET_GROUPS
            .div_ceil(tiles)
            .saturating_mul(groups)
            .min(max_slices)
            .max(groups);
        let width = THREADS / groups;
        let chunk = q
            .div_ceil(slices)
            .max(1)
            .div_ceil(width)
            .saturating_mul(width);
        // Rounding the chunk up can leave trailing slices empty; drop whole workgroups of them.
        let z = q.div_ceil(chunk).div_ceil(groups).max(1);
        Some(FilterPlan { groups, chunk, z })
    }

    fn slices(&self) -> usize {
        self.z * self.groups
    }

    fn workspace_len(&self, shape: &Conv2dShape) -> usize {
        if self.slices() > 1 {
            self.slices().saturating_mul(shape.weight_len())
        } else {
            0
        }
    }
}

pub(crate) fn workspace_len(_be: &WgpuBackend, shape: &Conv2dShape) -> usize {
    FilterPlan::new(shape).map_or(0, |p| p.workspace_len(shape))
}

/// Shape and buffer checks shared by the three passes, given the input-, weight- and
/// output-shaped buffers (as the CPU backend: the workspace must hold what `workspace_len`
/// reports, whichever pass it serves).
fn check(
    shape: &Conv2dShape,
    input: &WgpuBuffer<f32>,
    weight: &WgpuBuffer<f32>,
    output: &WgpuBuffer<f32>,
    workspace: &WgpuBuffer<f32>,
) -> Result<FilterPlan> {
    shape.check(input.len, weight.len, output.len)?;
    let plan = FilterPlan::new(shape).ok_or(Error::InvalidArgument {
        what: "conv2d",
        reason: "shape too large to index",
    })?;
    check_len("conv2d workspace", workspace.len, plan.workspace_len(shape))?;
    // Every flat index a kernel forms stays below one of these, and every coordinate sum the
    // host forms below fits a usize.
    let s = shape;
    for x in [
        s.input_len(),
        s.weight_len(),
        s.output_len(),
        plan.workspace_len(s),
        s.batch,
        s.in_channels,
        s.out_channels,
        s.in_height.saturating_add(s.padding.saturating_mul(2)),
        s.in_width.saturating_add(s.padding.saturating_mul(2)),
        s.kernel_h,
        s.kernel_w,
        s.stride,
    ] {
        word("conv2d", x)?;
    }
    Ok(plan)
}

/// The product of `dims`, or an error when it overflows.
fn prod(what: &'static str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or(Error::InvalidArgument {
            what,
            reason: "size exceeds the 32-bit indexing of the wgpu kernels",
        })
}

/// The product of `dims` as a kernel word.
fn dims_word(what: &'static str, dims: &[usize]) -> Result<u32> {
    word(what, prod(what, dims)?)
}

/// The grid of an `m x n` output in workgroup tiles: column tiles folded into x and y (they
/// can outnumber one dimension's limit), row tiles along z. Returns it and the column tiles.
fn gemm_grid(m: usize, n: usize) -> Result<([u32; 3], u32)> {
    let col_tiles = n.div_ceil(COLS);
    let [x, y, _] = groups(col_tiles, 1)?;
    let z = word("conv2d", m.div_ceil(ROWS))?;
    Ok(([x, y, z], word("conv2d", col_tiles)?))
}

/// Elements of one image of the input and of the output.
fn image_lens(s: &Conv2dShape) -> (usize, usize) {
    // `check` has shown that the whole tensors' lengths fit.
    (
        s.in_channels * s.in_height * s.in_width,
        s.out_channels * s.out_height() * s.out_width(),
    )
}

/// One run of whole images: its shape, and its windows of an input-shaped and an
/// output-shaped tensor, each with the element its images start at.
type ConvRun<'a> = (Conv2dShape, (Window<'a>, usize), (Window<'a>, usize));

/// The runs of whole images that fit a binding, in order.
fn conv_runs<'a>(
    be: &WgpuBackend,
    what: &'static str,
    shape: &Conv2dShape,
    input: &'a WgpuBuffer<f32>,
    output: &'a WgpuBuffer<f32>,
) -> Result<impl Iterator<Item = ConvRun<'a>>> {
    let (image_in, image_out) = image_lens(shape);
    let align = binding_align(be);
    let shape = *shape;
    let runs = image_runs(be, what, shape.batch, &[image_in, image_out])?;
    Ok(runs.map(move |(first, count)| {
        (
            Conv2dShape {
                batch: count,
                ..shape
            },
            input.window(first * image_in, count * image_in, align),
            output.window(first * image_out, count * image_out, align),
        )
    }))
}

/// Forward over the images `shape.batch` counts, in windows of input and output whose images
/// start at elements `input_at` and `output_at`.
fn forward_run(
    be: &WgpuBackend,
    shape: &Conv2dShape,
    (input, input_at): (Window<'_>, usize),
    weight: Window<'_>,
    (output, output_at): (Window<'_>, usize),
) -> Result<()> {
    let s = shape;
    let (oh, ow) = (s.out_height(), s.out_width());
    let m = s.out_channels;
    let k = prod("conv2d_forward", &[s.in_channels, s.kernel_h, s.kernel_w])?;
    let p = prod("conv2d_forward", &[s.batch, oh, ow])?;
    let (grid, col_tiles) = gemm_grid(m, p)?;
    let w = |d: &[usize]| dims_word("conv2d_forward", d);
    let params = [
        w(&[s.in_height])?,
        w(&[s.in_width])?,
        w(&[s.in_height, s.in_width])?,
        w(&[ow])?,
        w(&[oh, ow])?,
        w(&[s.kernel_w])?,
        w(&[s.kernel_h])?,
        w(&[s.stride])?,
        w(&[s.padding])?,
        w(&[k])?,
        w(&[p])?,
        w(&[m])?,
        col_tiles,
        w(&[s.in_channels, s.in_height, s.in_width])?,
        w(&[m, oh, ow])?,
        w(&[input_at])?,
        w(&[output_at])?,
    ];
    be.rec()
        .dispatch(&FORWARD, &[input, weight, output], &params, grid)
}

/// Backward-data over the images `shape.batch` counts, in windows of grad_output and
/// grad_input whose images start at elements `grad_output_at` and `grad_input_at`.
fn backward_data_run(
    be: &WgpuBackend,
    shape: &Conv2dShape,
    (grad_output, grad_output_at): (Window<'_>, usize),
    weight: Window<'_>,
    (grad_input, grad_input_at): (Window<'_>, usize),
) -> Result<()> {
    let s = shape;
    let stride = s.stride;
    let (oh, ow) = (s.out_height(), s.out_width());
    let m = s.in_channels;
    let w = |d: &[usize]| dims_word("conv2d_backward_data", d);
    // The first tap of each phase that reaches an output pixel, how many taps do, and the
    // output coordinate tap step 0 reads from phase pixel 0: ih + padding - kh is a multiple of
    // the stride exactly for kh = (ph + padding) % stride + stride * j.
    let taps = |phase: usize, kernel: usize| {
        let first = (phase + s.padding) % stride;
        let count = kernel.saturating_sub(first).div_ceil(stride);
        (first, count, (phase + s.padding - first) / stride)
    };
    for ph in 0..stride.min(s.in_height) {
        let rows = (s.in_height - ph).div_ceil(stride);
        let (kh0, nkh, dh) = taps(ph, s.kernel_h);
        for pw in 0..stride.min(s.in_width) {
            let cols = (s.in_width - pw).div_ceil(stride);
            let (kw0, nkw, dw) = taps(pw, s.kernel_w);
            let p = prod("conv2d_backward_data", &[s.batch, rows, cols])?;
            // A phase no tap reaches still gets its zeros written (K = 0).
            let k = prod("conv2d_backward_data", &[s.out_channels, nkh, nkw])?;
            let (grid, col_tiles) = gemm_grid(m, p)?;
            let params = [
                w(&[s.in_width])?,
                w(&[s.in_height, s.in_width])?,
                w(&[oh])?,
                w(&[ow])?,
                w(&[oh, ow])?,
                w(&[s.kernel_w])?,
                w(&[s.kernel_h, s.kernel_w])?,
                w(&[stride])?,
                w(&[nkh, nkw])?,
                w(&[nkw])?,
                w(&[k])?,
                w(&[p])?,
                w(&[m])?,
                col_tiles,
                w(&[cols])?,
                w(&[rows, cols])?,
                w(&[kh0])?,
                w(&[kw0])?,
                w(&[dh])?,
                w(&[dw])?,
                w(&[ph])?,
                w(&[pw])?,
                w(&[s.in_channels, s.in_height, s.in_width])?,
                w(&[s.out_channels, oh, ow])?,
                w(&[s.in_channels, s.kernel_h, s.kernel_w])?,
                w(&[nkh])?,
                w(&[grad_output_at])?,
                w(&[grad_input_at])?,
            ];
            be.rec()
                .dispatch(&DATA, &[grad_output, weight, grad_input], &params, grid)?;
        }
    }
    Ok(())
}

/// Backward-filter over the images `shape.batch` counts, in windows of input and grad_output
/// whose images start at elements `input_at` and `grad_output_at`.
fn backward_filter_run(
    be: &WgpuBackend,
    shape: &Conv2dShape,
    plan: &FilterPlan,
    (input, input_at): (Window<'_>, usize),
    (grad_output, grad_output_at): (Window<'_>, usize),
    [grad_weight, workspace]: [Window<'_>; 2],
) -> Result<()> {
    let s = shape;
    let (oh, ow) = (s.out_height(), s.out_width());
    let m = s.out_channels;
    let k = prod(
        "conv2d_backward_filter",
        &[s.in_channels, s.kernel_h, s.kernel_w],
    )?;
    let q = prod("conv2d_backward_filter", &[s.batch, oh, ow])?;
    let weight_len = prod("conv2d_backward_filter", &[m, k])?;
    if q == 0 || weight_len == 0 {
        // Nothing to add.
        return Ok(());
    }
    let w = |d: &[usize]| dims_word("conv2d_backward_filter", d);
    let one_slice = plan.slices() == 1;
    // The kernel forms the start and end of every slice.
    w(&[plan.slices() + 1, plan.chunk])?;
    let params = [
        w(&[s.in_height])?,
        w(&[s.in_width])?,
        w(&[s.in_height, s.in_width])?,
        w(&[ow])?,
        w(&[oh, ow])?,
        w(&[s.kernel_w])?,
        w(&[s.kernel_h, s.kernel_w])?,
        w(&[s.stride])?,
        w(&[s.padding])?,
        w(&[k])?,
        w(&[q])?,
        w(&[m])?,
        w(&[plan.chunk])?,
        u32::from(one_slice),
        w(&[weight_len])?,
        w(&[s.in_channels, s.in_height, s.in_width])?,
        w(&[m, oh, ow])?,
        w(&[oh])?,
        w(&[THREADS / plan.groups])?,
        w(&[input_at])?,
        w(&[grad_output_at])?,
    ];
    let grid = [
        w(&[k.div_ceil(COLS / plan.groups)])?,
        w(&[m.div_ceil(ROWS)])?,
        w(&[plan.z])?,
    ];
    let dst = if one_slice { grad_weight } else { workspace };
    be.rec()
        .dispatch(&FILTER, &[input, grad_output, dst], &params, grid)?;
    if one_slice {
        return Ok(());
    }
    be.rec().dispatch(
        &FILTER_REDUCE,
        &[workspace, grad_weight],
        &[w(&[weight_len])?, w(&[plan.slices()])?],
        groups(weight_len, FILTER_REDUCE.workgroup)?,
    )
}

impl ConvOps for WgpuBackend {
    fn conv2d_workspace_len(&self, shape: &Conv2dShape) -> usize {
        workspace_len(self, shape)
    }

    fn conv2d_forward(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        weight: &Self::Buffer,
        output: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        check(shape, input, weight, output, workspace)?;
        for (run, input, output) in conv_runs(self, "conv2d_forward", shape, input, output)? {
            forward_run(self, &run, input, weight.whole(), output)?;
        }
        Ok(())
    }

    fn conv2d_backward_data(
        &self,
        shape: &Conv2dShape,
        grad_output: &Self::Buffer,
        weight: &Self::Buffer,
        grad_input: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        check(shape, grad_input, weight, grad_output, workspace)?;
        let runs = conv_runs(self, "conv2d_backward_data", shape, grad_input, grad_output)?;
        for (run, grad_input, grad_output) in runs {
            backward_data_run(self, &run, grad_output, weight.whole(), grad_input)?;
        }
        Ok(())
    }

    fn conv2d_backward_filter(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        grad_output: &Self::Buffer,
        grad_weight: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        let plan = check(shape, input, grad_weight, grad_output, workspace)?;
        let align = binding_align(self);
        let weight_len = shape.weight_len();
        // Runs add into grad_weight one after another, so the sum over images is the same split or
        // whole. A run's plan has at most the whole batch's slices: the workspace holds it.
        let runs = conv_runs(self, "conv2d_backward_filter", shape, input, grad_output)?;
        for (run, input, grad_output) in runs {
            let plan = if run.batch == shape.batch {
                plan
            } else {
                FilterPlan::new(&run).ok_or(Error::InvalidArgument {
                    what: "conv2d",
                    reason: "shape too large to index",
                })?
            };
            let workspace = workspace.window(0, plan.workspace_len(&run), align).0;
            let grad_weight = grad_weight.window(0, weight_len, align).0;
            backward_filter_run(
                self,
                &run,
                &plan,
                input,
                grad_output,
                [grad_weight, workspace],
            )?;
        }
        Ok(())
    }
}
