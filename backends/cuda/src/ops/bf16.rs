//! bf16 copies for `--precision bf16` (`kernels/bf16.cu`): a product's f32 inputs are rounded
//! (to nearest, ties to even, NaN kept quiet with its sign) into one of three scratch slots,
//! and its bf16 result, accumulated in f32 by cuBLAS or cuDNN, is widened back into f32,
//! written or added to the destination element by element. One thread per element in a
//! grid-stride loop. The slots only grow, so after the first step of a model nothing is
//! allocated.

use std::cell::RefMut;

use cudarc::driver::{CudaSlice, CudaViewMut};
use dscl_core::{Error, Result};
use half::bf16;

use crate::backend::{grid_for, launch, CudaBackend};
use crate::kernel_args::{kernel_args, size_t};

kernel_args! {
    /// What the conversion kernels read (`Bf16Args` in `kernels/bf16.cu`).
    pub(crate) struct Bf16Args {
        n: u64,
    }
}

/// Scratch slots of [`CudaBackend::bf16_scratch`]: a product's two inputs and its result.
pub(crate) const BF16_SLOTS: usize = 3;

/// Whether a widened result replaces or is added to its f32 destination.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Widen {
    Write,
    Accumulate,
}

impl CudaBackend {
    /// Slot `slot` of the bf16 scratch, at least `len` elements long (its contents are not kept
    /// when it grows).
    pub(crate) fn bf16_slot(&self, slot: usize, len: usize) -> Result<RefMut<'_, CudaSlice<bf16>>> {
        let mut scratch = self.bf16_scratch[slot].borrow_mut();
        if scratch.len() < len {
            *scratch = self
                .stream
                .alloc_zeros::<bf16>(len)
                .map_err(|_| Error::OutOfMemory {
                    what: "bf16 scratch",
                    requested: len,
                    available: 0,
                })?;
        }
        Ok(scratch)
    }

    /// `src[offset .. offset + len]` rounded to bf16 into slot `slot` (at least one element
    /// long, so an empty product still has a valid pointer).
    pub(crate) fn bf16_copy(
        &self,
        slot: usize,
        src: &CudaSlice<f32>,
        offset: usize,
        len: usize,
    ) -> Result<RefMut<'_, CudaSlice<bf16>>> {
        let mut dst = self.bf16_slot(slot, len.max(1))?;
        if len > 0 {
            let view = src.slice(offset..offset + len);
            let args = Bf16Args { n: size_t(len) };
            launch!(
                self,
                "f32_to_bf16",
                grid_for(len),
                [&view, &mut *dst, &args]
            )?;
        }
        Ok(dst)
    }

    /// The first `len` elements of `src` widened into `dst` (written or added).
    pub(crate) fn bf16_widen(
        &self,
        src: &CudaSlice<bf16>,
        dst: &mut CudaViewMut<'_, f32>,
        len: usize,
        mode: Widen,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let args = Bf16Args { n: size_t(len) };
        match mode {
            Widen::Write => launch!(self, "bf16_to_f32", grid_for(len), [src, dst, &args]),
            Widen::Accumulate => {
                launch!(
                    self,
                    "bf16_accumulate_f32",
                    grid_for(len),
                    [src, dst, &args]
                )
            }
        }
    }
}
