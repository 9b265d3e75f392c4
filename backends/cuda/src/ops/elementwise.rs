//! Elementwise work (`kernels/elementwise.cu`): fill, copy, scale, axpy, add, ReLU and its
//! gradient, the bias row broadcast, one thread per element in a grid-stride loop, each element
//! computed alone in f32; and the three reductions: `sum` (one block, Kahan per thread, then a
//! tree in shared memory), the bias gradient (one thread per column, Kahan over the rows in
//! order, added once to the existing gradient). A copy of f32 data is the driver's
//! device-to-device copy; a copy of indices is a kernel.

use dscl_core::backend::ElementwiseOps;
use dscl_core::error::{check_len, check_range};
use dscl_core::Result;

use super::launch_match;
use crate::backend::{block_per, driver, grid_for, launch, too_large, CudaBackend, CudaBuffer};
use crate::kernel_args::{kernel_args, size_t};

kernel_args! {
    /// What the elementwise kernels read (`ElementwiseArgs` in `kernels/elementwise.cu`).
    pub(crate) struct ElementwiseArgs {
        /// The elements of a map or of `sum`.
        n: u64,
        /// The bias kernels' `[rows, cols]` matrix.
        rows: u64,
        cols: u64,
        /// fill's value, scale's and axpy's factor, sum's scale.
        alpha: f32,
        unused: u32,
    }
}

impl ElementwiseArgs {
    fn over(len: usize) -> Self {
        ElementwiseArgs {
            n: size_t(len),
            ..Self::default()
        }
    }

    fn with_alpha(len: usize, alpha: f64) -> Self {
        ElementwiseArgs {
            alpha: alpha as f32,
            ..Self::over(len)
        }
    }

    fn matrix(rows: usize, cols: usize) -> Self {
        ElementwiseArgs {
            rows: size_t(rows),
            cols: size_t(cols),
            ..Self::default()
        }
    }
}

pub(crate) fn bias_add(
    be: &CudaBackend,
    x: &mut CudaBuffer<f32>,
    bias: &CudaBuffer<f32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let len = rows.checked_mul(cols).ok_or(too_large("bias_add"))?;
    check_len("bias_add x", x.len, len)?;
    check_len("bias_add bias", bias.len, cols)?;
    if len == 0 {
        return Ok(());
    }
    let args = ElementwiseArgs::matrix(rows, cols);
    launch!(
        be,
        "bias_add",
        grid_for(len),
        [&mut x.slice, &bias.slice, &args]
    )
}

pub(crate) fn bias_backward(
    be: &CudaBackend,
    grad_out: &CudaBuffer<f32>,
    grad_bias: &mut CudaBuffer<f32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let len = rows.checked_mul(cols).ok_or(too_large("bias_backward"))?;
    check_len("bias_backward grad_out", grad_out.len, len)?;
    check_len("bias_backward grad_bias", grad_bias.len, cols)?;
    if cols == 0 {
        return Ok(());
    }
    let args = ElementwiseArgs::matrix(rows, cols);
    launch!(
        be,
        "bias_backward",
        grid_for(cols),
        [&grad_out.slice, &mut grad_bias.slice, &args]
    )
}

/// The maps of two inputs onto one output, all `len` long, one thread per element.
#[derive(Clone, Copy)]
enum BinaryMap {
    Add,
    ReluBackward,
}

impl BinaryMap {
    /// The buffers' names for the length errors, in the kernel's order.
    fn operands(self) -> [&'static str; 3] {
        match self {
            BinaryMap::Add => ["add a", "add b", "add out"],
            BinaryMap::ReluBackward => [
                "relu_backward y",
                "relu_backward grad_y",
                "relu_backward grad_x",
            ],
        }
    }
}

/// `map` of `inputs` into `out`, each checked to hold `len` elements.
fn binary_map(
    be: &CudaBackend,
    map: BinaryMap,
    inputs: [&CudaBuffer<f32>; 2],
    out: &mut CudaBuffer<f32>,
    len: usize,
) -> Result<()> {
    let [a, b] = inputs;
    let [a_name, b_name, out_name] = map.operands();
    check_len(a_name, a.len, len)?;
    check_len(b_name, b.len, len)?;
    check_len(out_name, out.len, len)?;
    if len == 0 {
        return Ok(());
    }
    let args = ElementwiseArgs::over(len);
    launch_match!(
        be,
        match map {
            BinaryMap::Add => "add_f32",
            BinaryMap::ReluBackward => "relu_backward",
        },
        grid_for(len),
        [&a.slice, &b.slice, &mut out.slice, &args]
    )
}

impl ElementwiseOps for CudaBackend {
    fn fill(&self, x: &mut Self::Buffer, offset: usize, len: usize, value: f64) -> Result<()> {
        let end = check_range("fill", x.len, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let args = ElementwiseArgs::with_alpha(len, value);
        let mut view = x.slice.slice_mut(offset..end);
        launch!(self, "fill_f32", grid_for(len), [&mut view, &args])
    }

    fn copy(
        &self,
        src: &Self::Buffer,
        src_offset: usize,
        dst: &mut Self::Buffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        let src_end = check_range("copy src", src.len, src_offset, len)?;
        let dst_end = check_range("copy dst", dst.len, dst_offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let from = src.slice.slice(src_offset..src_end);
        let mut to = dst.slice.slice_mut(dst_offset..dst_end);
        self.stream
            .memcpy_dtod(&from, &mut to)
            .map_err(|e| driver("copy", e))
    }

    fn copy_index(
        &self,
        src: &Self::IndexBuffer,
        src_offset: usize,
        dst: &mut Self::IndexBuffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        let src_end = check_range("copy_index src", src.len, src_offset, len)?;
        let dst_end = check_range("copy_index dst", dst.len, dst_offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let args = ElementwiseArgs::over(len);
        let from = src.slice.slice(src_offset..src_end);
        let mut to = dst.slice.slice_mut(dst_offset..dst_end);
        launch!(self, "copy_u32", grid_for(len), [&from, &mut to, &args])
    }

    fn scale(&self, x: &mut Self::Buffer, len: usize, alpha: f64) -> Result<()> {
        check_len("scale x", x.len, len)?;
        if len == 0 {
            return Ok(());
        }
        let args = ElementwiseArgs::with_alpha(len, alpha);
        launch!(self, "scale_f32", grid_for(len), [&mut x.slice, &args])
    }

    fn axpy(&self, alpha: f64, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        check_len("axpy x", x.len, len)?;
        check_len("axpy y", y.len, len)?;
        if len == 0 {
            return Ok(());
        }
        let args = ElementwiseArgs::with_alpha(len, alpha);
        launch!(
            self,
            "axpy_f32",
            grid_for(len),
            [&x.slice, &mut y.slice, &args]
        )
    }

    fn add(
        &self,
        a: &Self::Buffer,
        b: &Self::Buffer,
        out: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        binary_map(self, BinaryMap::Add, [a, b], out, len)
    }

    fn sum(
        &self,
        x: &Self::Buffer,
        len: usize,
        scale: f64,
        out: &mut Self::Buffer,
        offset: usize,
    ) -> Result<()> {
        check_len("sum x", x.len, len)?;
        let end = check_range("sum out", out.len, offset, 1)?;
        let args = ElementwiseArgs::with_alpha(len, scale);
        let mut target = out.slice.slice_mut(offset..end);
        launch!(
            self,
            "sum_f32",
            block_per("sum", 1)?,
            [&x.slice, &mut target, &args]
        )
    }

    fn relu_forward(&self, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        check_len("relu x", x.len, len)?;
        check_len("relu y", y.len, len)?;
        if len == 0 {
            return Ok(());
        }
        let args = ElementwiseArgs::over(len);
        launch!(
            self,
            "relu_forward",
            grid_for(len),
            [&x.slice, &mut y.slice, &args]
        )
    }

    fn relu_backward(
        &self,
        y: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        binary_map(self, BinaryMap::ReluBackward, [y, grad_y], grad_x, len)
    }
}
