//! GEMM through cuBLAS. cuBLAS is column-major: the row-major C read column-major is C^T =
//! op(B)^T op(A)^T, so every call passes B first. fp32 and TF32 are one SGEMM (the TF32 math
//! mode is set on the handle); bf16 rounds the addressed part of A and B into scratch and
//! multiplies with f32 accumulation into the f32 C.

use std::ffi::{c_int, c_longlong, c_void};

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::cublas::{result as cublas_result, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{DevicePtr, DevicePtrMut};
use dscl_core::backend::DenseOps;
use dscl_core::desc::GemmDesc;
use dscl_core::{Error, Result};

use crate::backend::{too_large, CudaBackend, CudaBuffer};
use crate::precision::Precision;

fn blas_error(what: &'static str) -> impl Fn(cudarc::cublas::result::CublasError) -> Error {
    move |e| Error::Device {
        what,
        code: e.0 as i64,
    }
}

/// `desc` as cuBLAS's column-major, B-first strided-batched call.
fn column_major(desc: &GemmDesc) -> Result<StridedBatchedConfig<f32>> {
    let what = "gemm";
    let int = |x: usize| c_int::try_from(x).map_err(|_| too_large(what));
    let long = |x: usize| c_longlong::try_from(x).map_err(|_| too_large(what));
    // cuBLAS wants every leading dimension at least max(1, stored row length), even where a
    // single row is read and the descriptor may carry any value.
    let ld = |ld: usize, (rows, cols): (usize, usize)| {
        if rows <= 1 {
            ld.max(cols).max(1)
        } else {
            ld.max(1)
        }
    };
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    Ok(StridedBatchedConfig {
        gemm: GemmConfig {
            transa: op(desc.trans_b),
            transb: op(desc.trans_a),
            m: int(desc.n)?,
            n: int(desc.m)?,
            k: int(desc.k)?,
            alpha: desc.alpha as f32,
            lda: int(ld(desc.b.ld, desc.b_stored()))?,
            ldb: int(ld(desc.a.ld, desc.a_stored()))?,
            beta: desc.beta as f32,
            ldc: int(ld(desc.c.ld, (desc.m, desc.n)))?,
        },
        batch_size: int(desc.batch)?,
        stride_a: long(desc.b.batch_stride)?,
        stride_b: long(desc.a.batch_stride)?,
        stride_c: long(desc.c.batch_stride)?,
    })
}

impl CudaBackend {
    /// `C = alpha op(A) op(B) + beta C` (row-major, [`GemmDesc`]) at the backend's precision.
    pub(crate) fn gemm_cublas(
        &self,
        desc: &GemmDesc,
        a: &CudaBuffer<f32>,
        b: &CudaBuffer<f32>,
        c: &mut CudaBuffer<f32>,
    ) -> Result<()> {
        desc.check(a.len, b.len, c.len)?;
        if desc.batch == 0 || desc.m == 0 || desc.n == 0 {
            return Ok(());
        }
        let cfg = column_major(desc)?;
        if self.precision == Precision::Bf16 {
            return self.gemm_bf16(desc, &cfg, a, b, c);
        }
        let a_view = a.slice.slice(desc.a.offset..);
        let b_view = b.slice.slice(desc.b.offset..);
        let mut c_view = c.slice.slice_mut(desc.c.offset..);
        // SAFETY: `desc.check` has shown that every element the batched product addresses lies
        // inside the three buffers, with the leading dimensions and strides given here.
        unsafe {
            self.blas
                .gemm_strided_batched(cfg, &b_view, &a_view, &mut c_view)
        }
        .map_err(blas_error("gemm"))
    }

    /// The product with A and B rounded to bf16 (only the elements the product addresses are
    /// converted), f32 accumulation, f32 C.
    fn gemm_bf16(
        &self,
        desc: &GemmDesc,
        cfg: &StridedBatchedConfig<f32>,
        a: &CudaBuffer<f32>,
        b: &CudaBuffer<f32>,
        c: &mut CudaBuffer<f32>,
    ) -> Result<()> {
        let addressed = |layout: &dscl_core::desc::MatrixLayout, (rows, cols)| {
            layout
                .required_len(desc.batch, rows, cols)
                .saturating_sub(layout.offset)
        };
        let a_len = addressed(&desc.a, desc.a_stored());
        let b_len = addressed(&desc.b, desc.b_stored());
        let a16 = self.bf16_copy(0, &a.slice, desc.a.offset, a_len)?;
        let b16 = self.bf16_copy(1, &b.slice, desc.b.offset, b_len)?;
        let mut c_view = c.slice.slice_mut(desc.c.offset..);
        let (a_ptr, _a_done) = a16.device_ptr(&self.stream);
        let (b_ptr, _b_done) = b16.device_ptr(&self.stream);
        let (c_ptr, _c_done) = c_view.device_ptr_mut(&self.stream);
        let g = &cfg.gemm;
        // SAFETY: the bf16 copies hold every element of A and B the product addresses at the
        // same offsets relative to their starts (strides and leading dimensions unchanged);
        // `desc.check` has shown C holds every element it addresses. alpha and beta are f32
        // on the host, as CUBLAS_COMPUTE_32F requires. The records returned with the pointers
        // order the call after the conversions on this stream.
        unsafe {
            cublas_result::gemm_strided_batched_ex(
                *self.blas.handle(),
                g.transa,
                g.transb,
                g.m,
                g.n,
                g.k,
                (&g.alpha) as *const f32 as *const c_void,
                b_ptr as *const c_void,
                cudaDataType::CUDA_R_16BF,
                g.lda,
                cfg.stride_a,
                a_ptr as *const c_void,
                cudaDataType::CUDA_R_16BF,
                g.ldb,
                cfg.stride_b,
                (&g.beta) as *const f32 as *const c_void,
                c_ptr as *mut c_void,
                cudaDataType::CUDA_R_32F,
                g.ldc,
                cfg.stride_c,
                cfg.batch_size,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(blas_error("gemm (bf16)"))
    }
}

impl DenseOps for CudaBackend {
    fn gemm(
        &self,
        desc: &GemmDesc,
        a: &Self::Buffer,
        b: &Self::Buffer,
        c: &mut Self::Buffer,
    ) -> Result<()> {
        self.gemm_cublas(desc, a, b, c)
    }

    fn bias_add(
        &self,
        x: &mut Self::Buffer,
        bias: &Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        crate::ops::elementwise::bias_add(self, x, bias, rows, cols)
    }

    fn bias_backward(
        &self,
        grad_out: &Self::Buffer,
        grad_bias: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        crate::ops::elementwise::bias_backward(self, grad_out, grad_bias, rows, cols)
    }
}
