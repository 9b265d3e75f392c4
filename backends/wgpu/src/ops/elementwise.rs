//! fill, copy, scale, axpy, add, sum and ReLU: one thread per element, split into windows.

use dscl_core::backend::ElementwiseOps;
use dscl_core::error::{check_len, check_range};
use dscl_core::Result;

use super::{binding_align, f32_bits, image_runs, map, word};
use crate::kernel::kernel;
use crate::{WgpuBackend, WgpuBuffer};

const UNARY: &str = include_str!("../shaders/elementwise.wgsl");
const BINARY: &str = include_str!("../shaders/binary.wgsl");
const TERNARY: &str = include_str!("../shaders/ternary.wgsl");
const COPY_U32: &str = include_str!("../shaders/copy_u32.wgsl");
const SUM: &str = include_str!("../shaders/sum.wgsl");

kernel!(FILL, UNARY, "fill", [ReadWrite], 256);
kernel!(SCALE, UNARY, "scale", [ReadWrite], 256);
kernel!(COPY_F32, BINARY, "copy_f32", [Read, ReadWrite], 256);
kernel!(AXPY, BINARY, "axpy", [Read, ReadWrite], 256);
kernel!(RELU_FORWARD, BINARY, "relu_forward", [Read, ReadWrite], 256);
kernel!(COPY_INDEX, COPY_U32, "copy_u32", [Read, ReadWrite], 256);
kernel!(ADD, TERNARY, "add", [Read, Read, ReadWrite], 256);
kernel!(
    RELU_BACKWARD,
    TERNARY,
    "relu_backward",
    [Read, Read, ReadWrite],
    256
);
kernel!(SUM_KERNEL, SUM, "sum", [Read, ReadWrite], 256);

/// The copy kernel of an element type.
pub(crate) trait CopyKernel {
    const COPY: &'static crate::kernel::Kernel;
}
impl CopyKernel for f32 {
    const COPY: &'static crate::kernel::Kernel = &COPY_F32;
}
impl CopyKernel for u32 {
    const COPY: &'static crate::kernel::Kernel = &COPY_INDEX;
}

pub(crate) fn copy<T: CopyKernel>(
    be: &WgpuBackend,
    src: &WgpuBuffer<T>,
    src_offset: usize,
    dst: &mut WgpuBuffer<T>,
    dst_offset: usize,
    len: usize,
) -> Result<()> {
    check_range("copy source", src.len, src_offset, len)?;
    check_range("copy destination", dst.len, dst_offset, len)?;
    map(
        be,
        T::COPY,
        &[src.span(src_offset), dst.span(dst_offset)],
        len,
        &[],
    )
}

impl ElementwiseOps for WgpuBackend {
    fn fill(&self, x: &mut Self::Buffer, offset: usize, len: usize, value: f64) -> Result<()> {
        check_range("fill", x.len, offset, len)?;
        map(self, &FILL, &[x.span(offset)], len, &[f32_bits(value)])
    }

    fn copy(
        &self,
        src: &Self::Buffer,
        src_offset: usize,
        dst: &mut Self::Buffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        copy(self, src, src_offset, dst, dst_offset, len)
    }

    fn copy_index(
        &self,
        src: &Self::IndexBuffer,
        src_offset: usize,
        dst: &mut Self::IndexBuffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        copy(self, src, src_offset, dst, dst_offset, len)
    }

    fn scale(&self, x: &mut Self::Buffer, len: usize, alpha: f64) -> Result<()> {
        check_len("scale", x.len, len)?;
        map(self, &SCALE, &[x.span(0)], len, &[f32_bits(alpha)])
    }

    fn axpy(&self, alpha: f64, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        check_len("axpy x", x.len, len)?;
        check_len("axpy y", y.len, len)?;
        map(
            self,
            &AXPY,
            &[x.span(0), y.span(0)],
            len,
            &[f32_bits(alpha)],
        )
    }

    fn add(
        &self,
        a: &Self::Buffer,
        b: &Self::Buffer,
        out: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        check_len("add a", a.len, len)?;
        check_len("add b", b.len, len)?;
        check_len("add out", out.len, len)?;
        map(self, &ADD, &[a.span(0), b.span(0), out.span(0)], len, &[])
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
        check_range("sum out", out.len, offset, 1)?;
        let align = binding_align(self);
        let (out, out_at) = out.window(offset, 1, align);
        for (first, count) in image_runs(self, "sum", len, &[1])? {
            let (xw, x_at) = x.window(first, count, align);
            self.rec().dispatch(
                &SUM_KERNEL,
                &[xw, out],
                &[
                    word("sum", count)?,
                    word("sum", out_at)?,
                    f32_bits(scale),
                    word("sum", x_at)?,
                    u32::from(first > 0),
                ],
                [1, 1, 1],
            )?;
        }
        Ok(())
    }

    fn relu_forward(&self, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        check_len("relu x", x.len, len)?;
        check_len("relu y", y.len, len)?;
        map(self, &RELU_FORWARD, &[x.span(0), y.span(0)], len, &[])
    }

    fn relu_backward(
        &self,
        y: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        check_len("relu_backward y", y.len, len)?;
        check_len("relu_backward grad_y", grad_y.len, len)?;
        check_len("relu_backward grad_x", grad_x.len, len)?;
        map(
            self,
            &RELU_BACKWARD,
            &[y.span(0), grad_y.span(0), grad_x.span(0)],
            len,
            &[],
        )
    }
}
