//! Named tensor sets: the parameters of a model, their gradients, the optimizer's velocity and
//! the batch-norm running statistics are each one [`TensorSet`] laid out by one
//! [`TensorLayout`], so a second parameter set (the momentum encoder's) or a gradient set is
//! made from the same plan, and an update walks matching tensors pairwise.
//!
//! The layout is plain metadata in fixed-capacity storage (no allocator needed); the buffers
//! come from the backend.

use heapless::{String, Vec};
use rand_core::Rng;

use crate::backend::{Backend, BufferLen};
use crate::element::Element;
use crate::error::{check_eq, check_len, ensure, Error, Result};

/// Tensors one layout can hold: ResNet-50 with a projection head and batch-norm statistics
/// needs 167 parameters and 106 running statistics (in separate layouts).
pub const MAX_TENSORS: usize = 192;
/// Longest tensor name, in bytes (`layer4.2.downsample.1.running_mean` is 34).
pub const MAX_NAME_LEN: usize = 48;

/// Index of a tensor in its layout (and in every set made from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorId(u16);

impl TensorId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// How a tensor starts (torchvision's ResNet initialisation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Every element the same value (batch-norm gamma 1 / beta 0, running var 1).
    Constant(f64),
    /// Normal(0, std) with `std = sqrt(2 / fan_out)`: `kaiming_normal_(mode="fan_out",
    /// nonlinearity="relu")`, used for every convolution.
    KaimingNormalFanOut { fan_out: usize },
    /// Uniform(-bound, bound): PyTorch's default `nn.Linear` initialisation uses
    /// `bound = 1 / sqrt(fan_in)` for the weight and the bias.
    Uniform { bound: f64 },
    /// Normal(0, std): `normal_(mean=0.0, std=std)`, the official stage-2 classifier's weight
    /// (`equal_lincls.py` draws its `fc.weight` with std 0.01).
    Normal { std: f64 },
}

/// One tensor of a layout: its name (torchvision's, so checkpoints load there), shape and
/// initialisation.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String<MAX_NAME_LEN>,
    /// Dimensions, outermost first; unused trailing entries are 1.
    pub shape: [usize; 4],
    pub rank: usize,
    pub init: Init,
}

impl TensorSpec {
    /// Elements in the tensor.
    pub fn len(&self) -> usize {
        self.shape[..self.rank].iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dims(&self) -> &[usize] {
        &self.shape[..self.rank]
    }
}

/// The ordered list of tensors of a model (or of its running statistics).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorLayout {
    specs: Vec<TensorSpec, MAX_TENSORS>,
}

/// Builds `prefix.suffix` (or `suffix` when the prefix is empty) into a fixed-capacity name.
pub fn join_name(prefix: &str, suffix: &str) -> Result<String<MAX_NAME_LEN>> {
    let mut name = String::new();
    let too_long = Error::InvalidArgument {
        what: "tensor name",
        reason: "longer than MAX_NAME_LEN bytes",
    };
    if !prefix.is_empty() {
        name.push_str(prefix).map_err(|_| too_long)?;
        name.push('.').map_err(|_| too_long)?;
    }
    name.push_str(suffix).map_err(|_| too_long)?;
    Ok(name)
}

impl TensorLayout {
    pub fn new() -> Self {
        TensorLayout { specs: Vec::new() }
    }

    /// Appends a tensor named `prefix.suffix` and returns its id.
    pub fn push(
        &mut self,
        prefix: &str,
        suffix: &str,
        dims: &[usize],
        init: Init,
    ) -> Result<TensorId> {
        ensure(
            (1..=4).contains(&dims.len()),
            "tensor shape",
            "must have 1 to 4 dimensions",
        )?;
        ensure(
            dims.iter().all(|&d| d > 0),
            "tensor shape",
            "every dimension must be at least 1",
        )?;
        let mut shape = [1usize; 4];
        shape[..dims.len()].copy_from_slice(dims);
        let id = TensorId(self.specs.len() as u16);
        self.specs
            .push(TensorSpec {
                name: join_name(prefix, suffix)?,
                shape,
                rank: dims.len(),
                init,
            })
            .map_err(|_| Error::OutOfMemory {
                what: "tensor layout",
                requested: MAX_TENSORS + 1,
                available: MAX_TENSORS,
            })?;
        Ok(id)
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
    pub fn spec(&self, id: TensorId) -> &TensorSpec {
        &self.specs[id.index()]
    }
    pub fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }
    /// Total elements over every tensor (the parameter count of a parameter layout).
    pub fn total_len(&self) -> usize {
        self.specs.iter().map(TensorSpec::len).sum()
    }
    /// The id of the tensor called `name`, if any.
    pub fn find(&self, name: &str) -> Option<TensorId> {
        self.specs
            .iter()
            .position(|s| s.name == name)
            .map(|i| TensorId(i as u16))
    }
}

/// One buffer per tensor of a layout.
pub struct TensorSet<B: Backend> {
    buffers: Vec<B::Buffer, MAX_TENSORS>,
}

/// Host-side staging chunk for initial values: fixed, so initialising needs no allocator.
const STAGING: usize = 256;

impl<B: Backend> TensorSet<B> {
    /// Allocates every tensor of `layout`, filled with zeros.
    pub fn zeros(backend: &B, layout: &TensorLayout) -> Result<Self> {
        let mut buffers = Vec::new();
        for spec in layout.specs() {
            let mut buf = backend.alloc(spec.len())?;
            backend.fill(&mut buf, 0, spec.len(), 0.0)?;
            // Capacity matches the layout's, which already held this many.
            let _ = buffers.push(buf);
        }
        Ok(TensorSet { buffers })
    }

    /// Allocates every tensor of `layout` and initialises it per its [`Init`], drawing random
    /// values from `rng` in layout order (so a seed fixes every weight).
    pub fn initialised(backend: &B, layout: &TensorLayout, rng: &mut impl Rng) -> Result<Self> {
        let mut set = Self::zeros(backend, layout)?;
        set.reinitialise(backend, layout, rng)?;
        Ok(set)
    }

    /// Writes fresh initial values into every tensor (see [`TensorSet::initialised`]).
    pub fn reinitialise(
        &mut self,
        backend: &B,
        layout: &TensorLayout,
        rng: &mut impl Rng,
    ) -> Result<()> {
        self.check_layout(layout)?;
        for (spec, buf) in layout.specs().iter().zip(self.buffers.iter_mut()) {
            let len = spec.len();
            match spec.init {
                Init::Constant(v) => backend.fill(buf, 0, len, v)?,
                Init::KaimingNormalFanOut { fan_out } => {
                    let std = libm::sqrt(2.0 / fan_out.max(1) as f64);
                    upload_generated(backend, buf, len, || std * standard_normal(rng))?;
                }
                Init::Uniform { bound } => {
                    upload_generated(backend, buf, len, || {
                        bound * (2.0 * unit_uniform(rng) - 1.0)
                    })?;
                }
                Init::Normal { std } => {
                    upload_generated(backend, buf, len, || std * standard_normal(rng))?;
                }
            }
        }
        Ok(())
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.buffers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }
    pub fn get(&self, id: TensorId) -> &B::Buffer {
        &self.buffers[id.index()]
    }
    pub fn get_mut(&mut self, id: TensorId) -> &mut B::Buffer {
        &mut self.buffers[id.index()]
    }
    /// Mutable access to several distinct tensors at once (`None` if two ids are equal or
    /// one is out of range).
    pub fn get_disjoint_mut<const N: usize>(
        &mut self,
        ids: [TensorId; N],
    ) -> Option<[&mut B::Buffer; N]> {
        self.buffers.get_disjoint_mut(ids.map(TensorId::index)).ok()
    }
    pub fn buffers(&self) -> &[B::Buffer] {
        &self.buffers
    }
    pub fn buffers_mut(&mut self) -> &mut [B::Buffer] {
        &mut self.buffers
    }

    /// Errors unless this set was made from `layout` (same count and tensor sizes).
    pub fn check_layout(&self, layout: &TensorLayout) -> Result<()> {
        check_eq("tensor set", self.buffers.len(), layout.len())?;
        for (spec, buf) in layout.specs().iter().zip(self.buffers.iter()) {
            check_len("tensor", buf.len(), spec.len())?;
        }
        Ok(())
    }

    /// Sets every tensor to zero (a gradient set before a step).
    pub fn zero(&mut self, backend: &B) -> Result<()> {
        for buf in self.buffers.iter_mut() {
            let len = buf.len();
            backend.fill(buf, 0, len, 0.0)?;
        }
        Ok(())
    }

    /// Copies every tensor of `source` (made from the same layout) into this set.
    pub fn copy_from(&mut self, backend: &B, source: &TensorSet<B>) -> Result<()> {
        check_len("tensor set", self.buffers.len(), source.buffers.len())?;
        for (dst, src) in self.buffers.iter_mut().zip(source.buffers.iter()) {
            let len = src.len();
            backend.copy(src, 0, dst, 0, len)?;
        }
        Ok(())
    }

    /// `self = momentum * self + (1 - momentum) * source`, tensor by tensor (the momentum
    /// encoder's update).
    pub fn ema_from(&mut self, backend: &B, momentum: f64, source: &TensorSet<B>) -> Result<()> {
        check_len("tensor set", self.buffers.len(), source.buffers.len())?;
        for (dst, src) in self.buffers.iter_mut().zip(source.buffers.iter()) {
            let len = src.len();
            backend.ema_update(momentum, src, dst, len)?;
        }
        Ok(())
    }

    /// Downloads tensor `id` into `out` (whose length must equal the tensor's).
    pub fn download(&self, backend: &B, id: TensorId, out: &mut [B::Elem]) -> Result<()> {
        let buf = self.get(id);
        ensure(
            out.len() == buf.len(),
            "tensor download",
            "destination length differs from the tensor's",
        )?;
        backend.download(buf, 0, out)
    }

    /// Uploads `values` into tensor `id` (whose length must equal the tensor's).
    pub fn upload(&mut self, backend: &B, id: TensorId, values: &[B::Elem]) -> Result<()> {
        let buf = self.get_mut(id);
        ensure(
            values.len() == buf.len(),
            "tensor upload",
            "source length differs from the tensor's",
        )?;
        backend.upload(buf, 0, values)
    }
}

fn upload_generated<B: Backend>(
    backend: &B,
    buf: &mut B::Buffer,
    len: usize,
    mut next: impl FnMut() -> f64,
) -> Result<()> {
    let mut staging = [B::Elem::default(); STAGING];
    let mut done = 0;
    while done < len {
        let n = STAGING.min(len - done);
        for v in staging[..n].iter_mut() {
            *v = B::Elem::from_f64(next());
        }
        backend.upload(buf, done, &staging[..n])?;
        done += n;
    }
    Ok(())
}

/// Uniform on [0, 1) with 53 random bits.
pub(crate) fn unit_uniform(rng: &mut impl Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A standard normal deviate (Box-Muller; the second deviate is discarded so each value
/// depends only on the generator's position).
pub(crate) fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1 = 1.0 - unit_uniform(rng); // in (0, 1]: the logarithm stays finite
    let u2 = unit_uniform(rng);
    libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(core::f64::consts::TAU * u2)
}
