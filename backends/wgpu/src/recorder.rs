//! Recording work: every dispatch goes into one open compute pass of one command encoder; the
//! encoder is submitted only when the host needs a result (download, fault check, upload
//! ordering) or when many dispatches have piled up. Bind groups are cached by the exact
//! buffer ranges they bind.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use dscl_core::{Error, Result};

use crate::buffer::Window;
use crate::context::GpuContext;
use crate::kernel::Kernel;

/// Dispatches recorded before a submit is forced, so a long chain of kernels overlaps with its
/// own recording.
const MAX_PENDING_DISPATCHES: usize = 512;
/// Cached bind groups before the cache is dropped (entries of freed buffers are never hit
/// again, but they hold the memory).
const MAX_CACHED_BIND_GROUPS: usize = 4096;
/// Most workgroups along one grid dimension (WebGPU's guaranteed limit).
pub(crate) const MAX_GROUPS_PER_DIM: u32 = 65535;

/// Most storage bindings one kernel declares.
pub(crate) const MAX_BINDINGS: usize = 16;

/// A kernel and the exact (buffer, byte start, byte length) of each binding; fixed capacity,
/// so looking up a cached bind group allocates nothing.
type BindKey = (usize, heapless::Vec<(u64, u64, u64), MAX_BINDINGS>);

pub(crate) struct Recorder {
    ctx: Rc<GpuContext>,
    state: RefCell<State>,
    fault: wgpu::Buffer,
    fault_group: wgpu::BindGroup,
}

struct State {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    pending: usize,
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
    staging: Option<wgpu::Buffer>,
    /// The fault slot as read back with the last download, valid while nothing has been
    /// recorded since: a loss read followed by a fault check is one round trip, not two.
    fault_snapshot: Option<[u32; 4]>,
}

impl Recorder {
    pub(crate) fn new(ctx: Rc<GpuContext>) -> Self {
        let fault = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dscl fault slot"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let fault_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("dscl fault slot"),
            layout: ctx.fault_layout(),
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: fault.as_entire_binding(),
            }],
        });
        Recorder {
            ctx,
            state: RefCell::new(State {
                encoder: None,
                pass: None,
                pending: 0,
                bind_groups: HashMap::new(),
                staging: None,
                fault_snapshot: None,
            }),
            fault,
            fault_group,
        }
    }

    pub(crate) fn ctx(&self) -> &GpuContext {
        &self.ctx
    }

    /// Records one dispatch of `kernel` over `groups` workgroups with `bindings` (in the
    /// kernel's binding order) and up to 32 parameter words.
    pub(crate) fn dispatch(
        &self,
        kernel: &'static Kernel,
        bindings: &[Window<'_>],
        params: &[u32],
        groups: [u32; 3],
    ) -> Result<()> {
        if bindings.len() != kernel.bindings.len() {
            return Err(Error::InvalidArgument {
                what: kernel.entry,
                reason: "wrong number of buffer bindings (dscl-wgpu bug)",
            });
        }
        if params.len() * 4 > crate::context::IMMEDIATE_BYTES as usize {
            return Err(Error::InvalidArgument {
                what: kernel.entry,
                reason: "parameter block larger than the immediate data (dscl-wgpu bug)",
            });
        }
        if groups.contains(&0) {
            return Ok(());
        }
        if groups.iter().any(|&g| g > MAX_GROUPS_PER_DIM) {
            return Err(Error::InvalidArgument {
                what: kernel.entry,
                reason: "grid larger than the device's workgroup-count limit",
            });
        }
        let max_binding = self.ctx.max_binding_bytes();
        if bindings.iter().any(|w| w.byte_len > max_binding) {
            return Err(Error::InvalidArgument {
                what: kernel.entry,
                reason: "a buffer this kernel binds whole is larger than the adapter's storage \
                         binding limit",
            });
        }
        let pipeline = self.ctx.pipeline(kernel);
        let mut st = self.state.borrow_mut();
        let mut ranges = heapless::Vec::new();
        for w in bindings {
            ranges
                .push((w.id, w.byte_start, w.byte_len))
                .map_err(|_| Error::InvalidArgument {
                    what: kernel.entry,
                    reason: "more buffer bindings than dscl-wgpu supports",
                })?;
        }
        let key: BindKey = (kernel as *const Kernel as usize, ranges);
        if st.bind_groups.len() >= MAX_CACHED_BIND_GROUPS && !st.bind_groups.contains_key(&key) {
            st.bind_groups.clear();
        }
        let group = st
            .bind_groups
            .entry(key)
            .or_insert_with(|| {
                let entries: Vec<wgpu::BindGroupEntry> = bindings
                    .iter()
                    .enumerate()
                    .map(|(i, w)| wgpu::BindGroupEntry {
                        binding: i as u32,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: w.raw,
                            offset: w.byte_start,
                            size: wgpu::BufferSize::new(w.byte_len),
                        }),
                    })
                    .collect();
                self.ctx
                    .device
                    .create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(kernel.entry),
                        layout: &pipeline.layout,
                        entries: &entries,
                    })
            })
            .clone();
        let mut words = [0u32; 32];
        words[..params.len()].copy_from_slice(params);
        let pass = self.open_pass(&mut st);
        pass.set_pipeline(&pipeline.pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.set_bind_group(1, &self.fault_group, &[]);
        pass.set_immediates(0, bytemuck::cast_slice(&words));
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        st.pending += 1;
        st.fault_snapshot = None;
        if st.pending >= MAX_PENDING_DISPATCHES {
            self.submit(&mut st);
        }
        Ok(())
    }

    fn open_pass<'s>(&self, st: &'s mut State) -> &'s mut wgpu::ComputePass<'static> {
        let State { encoder, pass, .. } = st;
        pass.get_or_insert_with(|| {
            encoder
                .get_or_insert_with(|| self.new_encoder())
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("dscl"),
                    timestamp_writes: None,
                })
                // The pass must outlive this borrow of the encoder; `submit` drops it before
                // finishing the encoder.
                .forget_lifetime()
        })
    }

    fn new_encoder(&self) -> wgpu::CommandEncoder {
        self.ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("dscl"),
            })
    }

    fn submit(&self, st: &mut State) {
        st.pass = None;
        if let Some(encoder) = st.encoder.take() {
            self.ctx.queue.submit([encoder.finish()]);
        }
        st.pending = 0;
    }

    /// Submits everything recorded so far (queue writes issued after this run after it).
    pub(crate) fn flush(&self) {
        let mut st = self.state.borrow_mut();
        self.submit(&mut st);
    }

    /// Submits everything and waits until the device has run it.
    pub(crate) fn wait(&self) -> Result<()> {
        self.flush();
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|_| Error::Device {
                what: "synchronize: device poll",
                code: -3,
            })?;
        self.check_device("synchronize")
    }

    /// Device errors wgpu reported so far, as a library error.
    pub(crate) fn check_device(&self, what: &'static str) -> Result<()> {
        match self.ctx.take_device_error() {
            None => Ok(()),
            Some(msg) => {
                eprintln!("dscl-wgpu: {what}: {msg}");
                Err(Error::Device { what, code: -1 })
            }
        }
    }

    /// Copies `byte_len` bytes at `byte_start` of `src` to the host, waiting for all work.
    pub(crate) fn read_bytes(
        &self,
        src: &wgpu::Buffer,
        byte_start: u64,
        byte_len: u64,
        out: &mut [u8],
    ) -> Result<()> {
        self.read_bytes_and_slot(src, byte_start, byte_len, out)
            .map(|_| ())
    }

    /// [`Self::read_bytes`], then [`Self::take_fault`] from the slot's copy that rode along
    /// with the data: one submit, one map, one wait.
    pub(crate) fn read_bytes_and_take_fault(
        &self,
        src: &wgpu::Buffer,
        byte_start: u64,
        byte_len: u64,
        out: &mut [u8],
    ) -> Result<Option<[u32; 3]>> {
        match self.read_bytes_and_slot(src, byte_start, byte_len, out)? {
            Some(words) => {
                self.state.borrow_mut().fault_snapshot = None;
                Ok(self.settle_fault(words))
            }
            // Nothing to copy: the slot alone.
            None => self.take_fault(),
        }
    }

    /// [`Self::read_bytes`], returning the fault slot's words as the same copy found them
    /// (`None` when there was nothing to read, and so no copy).
    fn read_bytes_and_slot(
        &self,
        src: &wgpu::Buffer,
        byte_start: u64,
        byte_len: u64,
        out: &mut [u8],
    ) -> Result<Option<[u32; 4]>> {
        if byte_len == 0 {
            return Ok(None);
        }
        let mut st = self.state.borrow_mut();
        st.pass = None;
        let need = byte_len.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        // The fault slot rides along after the data.
        let fault_at = need;
        let need_total = need + 16;
        let reuse = st.staging.as_ref().is_some_and(|s| s.size() >= need_total);
        if !reuse {
            st.staging = Some(self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("dscl staging"),
                size: need_total,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = st.staging.clone().ok_or(Error::Device {
            what: "download",
            code: -2,
        })?;
        let encoder = st.encoder.get_or_insert_with(|| self.new_encoder());
        encoder.copy_buffer_to_buffer(src, byte_start, &staging, 0, need);
        encoder.copy_buffer_to_buffer(&self.fault, 0, &staging, fault_at, 16);
        self.submit(&mut st);
        drop(st);
        let slice = staging.slice(0..need_total);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|_| Error::Device {
                what: "download: device poll",
                code: -3,
            })?;
        match rx.recv() {
            Ok(Ok(())) => {}
            _ => {
                return Err(Error::Device {
                    what: "download: buffer map",
                    code: -4,
                })
            }
        }
        let words: [u32; 4] = {
            let data = slice.get_mapped_range().map_err(|_| Error::Device {
                what: "download: mapped range",
                code: -5,
            })?;
            out.copy_from_slice(&data[..out.len()]);
            let mut slot = [0u8; 16];
            slot.copy_from_slice(&data[fault_at as usize..fault_at as usize + 16]);
            bytemuck::cast(slot)
        };
        self.state.borrow_mut().fault_snapshot = Some(words);
        staging.unmap();
        self.check_device("download")?;
        Ok(Some(words))
    }

    /// Writes `bytes` at `byte_start` of `dst`, after everything recorded so far.
    pub(crate) fn write_bytes(&self, dst: &wgpu::Buffer, byte_start: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.flush();
        self.ctx.queue.write_buffer(dst, byte_start, bytes);
    }

    /// Reads and clears the fault slot: (kind, index, value) when set.
    pub(crate) fn take_fault(&self) -> Result<Option<[u32; 3]>> {
        let snapshot = self.state.borrow_mut().fault_snapshot.take();
        let w = match snapshot {
            Some(w) => w,
            None => {
                let mut raw = [0u8; 16];
                self.read_bytes(&self.fault, 0, 16, &mut raw)?;
                self.state.borrow_mut().fault_snapshot = None;
                bytemuck::cast(raw)
            }
        };
        Ok(self.settle_fault(w))
    }

    /// Takes the fault of the slot's words `w` as read back: clears the slot when set.
    fn settle_fault(&self, w: [u32; 4]) -> Option<[u32; 3]> {
        if w[0] == 0 {
            // Still clear: the next check may use it again until new work is recorded.
            self.state.borrow_mut().fault_snapshot = Some(w);
            return None;
        }
        self.write_bytes(&self.fault, 0, &[0u8; 16]);
        Some([w[1], w[2], w[3]])
    }
}

/// Workgroups for `n` invocations of `wg` each, folded into x and y when x would exceed the
/// per-dimension limit; shaders recover the flat index with `flat_index`.
pub(crate) fn grid_1d(n: usize, wg: u32) -> Result<[u32; 3]> {
    let groups = n.div_ceil(wg as usize);
    if groups == 0 {
        return Ok([0, 1, 1]);
    }
    let x = groups.min(MAX_GROUPS_PER_DIM as usize);
    let y = groups.div_ceil(x);
    if y > MAX_GROUPS_PER_DIM as usize {
        return Err(Error::InvalidArgument {
            what: "dispatch",
            reason: "more work items than one dispatch can address",
        });
    }
    Ok([x as u32, y as u32, 1])
}
