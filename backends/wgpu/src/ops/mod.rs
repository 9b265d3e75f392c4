//! Host side of the kernels, one module per family (shaders in `src/shaders/`), and the
//! splitting of elementwise work into windows that fit the adapter's binding limit.

pub(crate) mod batch_norm;
pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod gemm;
pub(crate) mod optim;
pub(crate) mod pool;
pub(crate) mod roi_align;
pub(crate) mod rows;

use dscl_core::Result;

use crate::buffer::{WgpuBuffer, Window};
use crate::kernel::Kernel;
use crate::recorder::{grid_1d, MAX_BINDINGS};
use crate::WgpuBackend;

/// One operand of an elementwise kernel: a buffer and the element where its range starts.
pub(crate) struct Span<'a> {
    raw: &'a wgpu::Buffer,
    id: u64,
    buf_len: usize,
    start: usize,
}

impl<T> WgpuBuffer<T> {
    /// This buffer from element `start` on, as an elementwise operand.
    pub(crate) fn span(&self, start: usize) -> Span<'_> {
        Span {
            raw: &self.raw,
            id: self.id,
            buf_len: self.len,
            start,
        }
    }
}

/// Runs `kernel` over `len` elements at once per operand: element `e` of the work touches
/// element `span.start + e` of every span. Splits the range into chunks whose windows fit the
/// binding limit. The kernel reads `pu(0)` = elements in this chunk, `pu(1 + i)` = offset of
/// operand i inside its window, then `extra` words.
pub(crate) fn map(
    be: &WgpuBackend,
    kernel: &'static Kernel,
    spans: &[Span<'_>],
    len: usize,
    extra: &[u32],
) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let ctx = be.rec().ctx();
    let align = ctx.limits.min_storage_buffer_offset_alignment as u64;
    let max_elems = (ctx.max_binding_bytes() / 4) as usize;
    // Room for the alignment slack of each window, and a whole number of workgroups.
    let chunk = (max_elems - (align as usize / 4).max(1)) / kernel.workgroup as usize
        * kernel.workgroup as usize;
    let too_many = || dscl_core::Error::InvalidArgument {
        what: kernel.entry,
        reason: "more operands or parameters than one dispatch holds (dscl-wgpu bug)",
    };
    let mut done = 0;
    while done < len {
        let n = chunk.min(len - done);
        // Fixed capacity: an elementwise kernel on the training path allocates nothing.
        let mut words: heapless::Vec<u32, 32> = heapless::Vec::new();
        let mut windows: heapless::Vec<Window<'_>, MAX_BINDINGS> = heapless::Vec::new();
        words.push(word(kernel.entry, n)?).map_err(|_| too_many())?;
        for s in spans {
            let (window, offset) = Window::around(s.raw, s.id, s.buf_len, s.start + done, n, align);
            windows.push(window).map_err(|_| too_many())?;
            words
                .push(word(kernel.entry, offset)?)
                .map_err(|_| too_many())?;
        }
        words.extend_from_slice(extra).map_err(|_| too_many())?;
        be.rec()
            .dispatch(kernel, &windows, &words, grid_1d(n, kernel.workgroup)?)?;
        done += n;
    }
    Ok(())
}

/// An f64 scalar as the f32 bit pattern kernels read with `pf`.
pub(crate) fn f32_bits(x: f64) -> u32 {
    (x as f32).to_bits()
}

/// A size or index as a kernel word; errors when it does not fit in 32 bits.
pub(crate) fn word(what: &'static str, x: usize) -> Result<u32> {
    u32::try_from(x).map_err(|_| dscl_core::Error::InvalidArgument {
        what,
        reason: "size exceeds the 32-bit indexing of the wgpu kernels",
    })
}

/// Workgroups of `wg` invocations covering `n` items, for kernels that index a 1-D grid.
pub(crate) fn groups(n: usize, wg: u32) -> Result<[u32; 3]> {
    grid_1d(n, wg)
}
