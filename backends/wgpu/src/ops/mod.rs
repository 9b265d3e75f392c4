//! Host side of the kernels, one module per family (shaders in `src/shaders/`), and the
//! splitting of work into windows that fit the adapter's binding limit: elementwise work by
//! element ranges, per-image work (convolution, pooling, batch norm) by runs of whole images.

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

/// Runs `f(first, count)` over the [`image_runs`] of `batch` images.
pub(crate) fn for_image_runs(
    be: &WgpuBackend,
    what: &'static str,
    batch: usize,
    per_image: &[usize],
    mut f: impl FnMut(usize, usize) -> Result<()>,
) -> Result<()> {
    for (first, count) in image_runs(be, what, batch, per_image)? {
        f(first, count)?;
    }
    Ok(())
}

/// Runs of whole images, `(first image, images)`, covering `batch` images in order, each as
/// long as the binding limit allows when every operand binds its images' elements
/// (`per_image[i]` each, plus the slack of an aligned window start). Work that fits is one run
/// of the whole batch; an empty batch is one empty run, so work that writes something even
/// then (a sum's 0, an invalid box's zeros) still runs. Errors when one image of an operand
/// alone is larger than a binding.
pub(crate) fn image_runs(
    be: &WgpuBackend,
    what: &'static str,
    batch: usize,
    per_image: &[usize],
) -> Result<ImageRuns> {
    let ctx = be.rec().ctx();
    let slack = (ctx.limits.min_storage_buffer_offset_alignment as usize / 4).max(1);
    let max_elems = (ctx.max_binding_bytes() / 4) as usize;
    let largest = per_image.iter().copied().max().unwrap_or(0).max(1);
    let run = if batch.saturating_mul(largest) <= max_elems {
        batch
    } else {
        max_elems.saturating_sub(slack) / largest
    };
    if run == 0 && batch > 0 {
        return Err(dscl_core::Error::InvalidArgument {
            what,
            reason: "one image of this tensor is larger than the adapter's storage binding limit",
        });
    }
    Ok(ImageRuns {
        batch,
        run,
        next: 0,
        done: false,
    })
}

/// The iterator [`image_runs`] returns (cloned to walk the same runs again).
#[derive(Clone)]
pub(crate) struct ImageRuns {
    batch: usize,
    run: usize,
    next: usize,
    done: bool,
}

impl ImageRuns {
    /// Whether the whole batch is one run (nothing is split).
    pub(crate) fn is_whole(&self) -> bool {
        self.run >= self.batch
    }
}

impl Iterator for ImageRuns {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        if self.done {
            return None;
        }
        let first = self.next;
        let count = self.run.min(self.batch - first);
        self.next += count;
        self.done = self.next >= self.batch;
        Some((first, count))
    }
}

/// The alignment, in bytes, a binding's start must have on this device.
pub(crate) fn binding_align(be: &WgpuBackend) -> u64 {
    be.rec().ctx().limits.min_storage_buffer_offset_alignment as u64
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
