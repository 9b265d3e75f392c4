//! The losses on arbitrary shapes, labels, values and hyperparameters, on the CPU backend (f32)
//! and the f64 reference backend.
//!
//! Contract: every call returns an error, or a finite loss with finite gradients; nothing
//! panics. Values mix ordinary numbers with NaN, infinities, denormals, zeros and magnitudes
//! at the edge of the element type; temperature and beta include zero, negative, tiny, huge
//! and NaN. Sizes stay small (B <= 16, d <= 32, K <= 32) so each run takes microseconds.
#![no_main]

use arbitrary::Arbitrary;
use dscl_core::loss::{
    ContrastiveInputs, ContrastiveShape, CrossEntropy, L2Normalize, PatchSelfDistillation,
    PbsdInputs, PositiveWeighting, QueryGradient, SupervisedContrastive,
};
use dscl_core::reference::ReferenceBackend;
use dscl_core::{Backend, Element, Result};
use dscl_cpu::CpuBackend;
use libfuzzer_sys::fuzz_target;

/// One feature value, biased towards the values that break numerics.
#[derive(Arbitrary, Clone, Copy, Debug)]
enum Value {
    /// In [-1, 1]: the range of a normalised feature.
    Unit(i8),
    /// `mantissa * 2^exponent`: any magnitude from denormal to overflow.
    Scaled {
        mantissa: i16,
        exponent: i16,
    },
    Zero,
    NegativeZero,
    NaN,
    Infinity,
    NegativeInfinity,
    /// An f32 denormal (still normal in f64).
    F32Denormal(u16),
    F64Denormal(u16),
    F32Max,
    F64Max,
    Raw(f64),
}

impl Value {
    fn to_f64(self) -> f64 {
        match self {
            Value::Unit(x) => f64::from(x) / 127.0,
            Value::Scaled { mantissa, exponent } => {
                f64::from(mantissa) * 2f64.powi(i32::from(exponent % 1100))
            }
            Value::Zero => 0.0,
            Value::NegativeZero => -0.0,
            Value::NaN => f64::NAN,
            Value::Infinity => f64::INFINITY,
            Value::NegativeInfinity => f64::NEG_INFINITY,
            Value::F32Denormal(bits) => f64::from(f32::from_bits(u32::from(bits) + 1)),
            Value::F64Denormal(bits) => f64::from_bits(u64::from(bits) + 1),
            Value::F32Max => f64::from(f32::MAX),
            Value::F64Max => f64::MAX,
            Value::Raw(x) => x,
        }
    }
}

/// A temperature or beta, biased towards the edges of (and beyond) the valid range.
#[derive(Arbitrary, Clone, Copy, Debug)]
enum Hyper {
    /// The range the papers use: 0.001 ..= 65.5.
    Typical(u16),
    Zero,
    Negative(u8),
    SmallestNormal,
    SmallestDenormal,
    Tiny,
    Huge,
    Max,
    Infinity,
    NaN,
    Raw(f64),
}

impl Hyper {
    fn to_f64(self) -> f64 {
        match self {
            Hyper::Typical(x) => (f64::from(x) + 1.0) / 1000.0,
            Hyper::Zero => 0.0,
            Hyper::Negative(x) => -(f64::from(x) + 1.0) / 100.0,
            Hyper::SmallestNormal => f64::MIN_POSITIVE,
            Hyper::SmallestDenormal => f64::from_bits(1),
            Hyper::Tiny => 1e-30,
            Hyper::Huge => 1e30,
            Hyper::Max => f64::MAX,
            Hyper::Infinity => f64::INFINITY,
            Hyper::NaN => f64::NAN,
            Hyper::Raw(x) => x,
        }
    }
}

#[derive(Arbitrary, Clone, Copy, Debug)]
enum Label {
    /// Reduced modulo the class count: a valid label.
    Valid(u8),
    /// Taken as is: usually out of range.
    Raw(u32),
}

/// Which input buffer to hand over one element short, to exercise the shape checks.
#[derive(Arbitrary, Clone, Copy, Debug)]
enum ShortBuffer {
    None,
    Queries,
    Keys,
    Queue,
    Labels,
    Teachers,
    Students,
}

#[derive(Arbitrary, Debug)]
struct Case {
    batch: u8,
    dim: u8,
    queue_len: u8,
    queue_filled: u8,
    crops: u8,
    num_classes: u8,
    temperature: Hyper,
    beta: Hyper,
    anchor_only: bool,
    /// Bounds the logits block, so the blocked path (several anchor blocks) runs too.
    max_block_elems: u8,
    /// Run the inputs through `L2Normalize` first, as training does.
    normalize: bool,
    short: ShortBuffer,
    labels: Vec<Label>,
    values: Vec<Value>,
}

/// The case's sizes, already reduced to the small ranges the target explores.
struct Dims {
    batch: usize,
    dim: usize,
    queue_len: usize,
    queue_filled: usize,
    crops: usize,
    num_classes: u32,
}

impl Case {
    fn dims(&self) -> Dims {
        let queue_len = usize::from(self.queue_len % 33);
        Dims {
            // 0 is allowed on purpose: a zero batch, dimension or class count must be refused.
            batch: usize::from(self.batch % 17),
            dim: usize::from(self.dim % 33),
            queue_len,
            // Up to one past the queue, which must be refused.
            queue_filled: usize::from(self.queue_filled) % (queue_len + 2),
            crops: usize::from(self.crops % 5),
            num_classes: u32::from(self.num_classes % 12),
        }
    }

    /// `len` values, cycling through the case's values (zeros when it has none); `salt` makes
    /// the different inputs start at different places in the cycle.
    fn values(&self, len: usize, salt: usize) -> Vec<f64> {
        if self.values.is_empty() {
            return vec![0.0; len];
        }
        let n = self.values.len();
        (0..len)
            .map(|i| self.values[(i + salt * 7) % n].to_f64())
            .collect()
    }

    fn labels(&self, len: usize, salt: usize, num_classes: u32) -> Vec<u32> {
        if self.labels.is_empty() {
            return vec![0; len];
        }
        let n = self.labels.len();
        (0..len)
            .map(|i| match self.labels[(i + salt * 3) % n] {
                Label::Valid(x) => u32::from(x) % num_classes.max(1),
                Label::Raw(x) => x,
            })
            .collect()
    }

    fn max_block_elems(&self) -> usize {
        match self.max_block_elems {
            0 => usize::MAX,
            n => usize::from(n),
        }
    }
}

/// Host data of one case, in f64.
struct HostInputs {
    queries: Vec<f64>,
    keys: Vec<f64>,
    queue: Vec<f64>,
    labels: Vec<u32>,
    queue_labels: Vec<u32>,
    teachers: Vec<f64>,
    students: Vec<f64>,
}

impl HostInputs {
    fn new(case: &Case, d: &Dims) -> Self {
        let mut host = HostInputs {
            queries: case.values(d.batch * d.dim, 0),
            keys: case.values(d.batch * d.dim, 1),
            queue: case.values(d.queue_filled.min(d.queue_len) * d.dim, 2),
            labels: case.labels(d.batch, 0, d.num_classes),
            queue_labels: case.labels(d.queue_filled.min(d.queue_len), 1, d.num_classes),
            teachers: case.values(d.crops * d.batch * d.dim, 3),
            students: case.values(d.crops * d.batch * d.dim, 4),
        };
        match case.short {
            ShortBuffer::None => {}
            ShortBuffer::Queries => drop(host.queries.pop()),
            ShortBuffer::Keys => drop(host.keys.pop()),
            ShortBuffer::Queue => drop(host.queue.pop()),
            ShortBuffer::Labels => drop(host.labels.pop()),
            ShortBuffer::Teachers => drop(host.teachers.pop()),
            ShortBuffer::Students => drop(host.students.pop()),
        }
        host
    }
}

fn upload<B: Backend>(backend: &B, host: &[f64]) -> Result<B::Buffer> {
    let elems: Vec<B::Elem> = host.iter().map(|&x| B::Elem::from_f64(x)).collect();
    let mut buf = backend.alloc(elems.len())?;
    backend.upload(&mut buf, 0, &elems)?;
    Ok(buf)
}

fn upload_labels<B: Backend>(backend: &B, host: &[u32]) -> Result<B::IndexBuffer> {
    let mut buf = backend.alloc_index(host.len())?;
    backend.upload_index(&mut buf, 0, host)?;
    Ok(buf)
}

fn download<B: Backend>(backend: &B, buf: &B::Buffer, len: usize) -> Result<Vec<f64>> {
    let mut host = vec![B::Elem::default(); len];
    backend.download(buf, 0, &mut host)?;
    Ok(host.iter().map(|x| x.widen()).collect())
}

/// Uploads `host` (rows of `dim`), L2-normalised on the device when `normalize`.
fn features<B: Backend>(
    backend: &B,
    what: &'static str,
    host: &[f64],
    dim: usize,
    normalize: bool,
) -> Result<B::Buffer> {
    let raw = upload(backend, host)?;
    if !normalize || dim == 0 {
        return Ok(raw);
    }
    let rows = host.len() / dim;
    let mut out = backend.alloc(host.len())?;
    L2Normalize::new(backend, rows, dim)?.forward_checked(backend, what, &raw, &mut out)?;
    Ok(out)
}

/// Panics, naming the loss and backend, unless the loss and every gradient are finite.
fn assert_finite<B: Backend>(backend: &B, what: &str, loss: f64, grad: &[f64]) {
    let name = backend.device_name();
    assert!(loss.is_finite(), "{name}: {what} returned Ok({loss})");
    if let Some(i) = grad.iter().position(|g| !g.is_finite()) {
        panic!(
            "{name}: {what} returned Ok({loss}) with gradient[{i}] = {}",
            grad[i]
        );
    }
}

fn contrastive<B: Backend>(
    backend: &B,
    case: &Case,
    d: &Dims,
    host: &HostInputs,
    weighting: PositiveWeighting,
) -> Result<()> {
    let shape = ContrastiveShape {
        batch: d.batch,
        dim: d.dim,
        queue_len: d.queue_len,
        num_classes: d.num_classes,
    };
    let mut loss = SupervisedContrastive::new(
        backend,
        shape,
        weighting,
        case.temperature.to_f64(),
        case.max_block_elems(),
    )?;
    let queries = features(backend, "queries", &host.queries, d.dim, case.normalize)?;
    let keys = features(backend, "keys", &host.keys, d.dim, case.normalize)?;
    let queue = features(backend, "queue", &host.queue, d.dim, case.normalize)?;
    let labels = upload_labels(backend, &host.labels)?;
    let queue_labels = upload_labels(backend, &host.queue_labels)?;
    let inputs = ContrastiveInputs::<B> {
        queries: &queries,
        keys: &keys,
        queue: &queue,
        labels: &labels,
        queue_labels: &queue_labels,
        queue_filled: d.queue_filled,
    };
    let mode = if case.anchor_only {
        QueryGradient::AnchorOnly
    } else {
        QueryGradient::ThroughContrastSet
    };
    let len = d.batch * d.dim;
    let mut grad = backend.alloc(len)?;
    let value = loss.forward_backward(backend, &inputs, mode, &mut grad)?;
    let what = format!("{weighting:?} ({mode:?})");
    assert_finite(backend, &what, value, &download(backend, &grad, len)?);
    Ok(())
}

fn pbsd<B: Backend>(backend: &B, case: &Case, d: &Dims, host: &HostInputs) -> Result<()> {
    let shape = ContrastiveShape {
        batch: d.batch,
        dim: d.dim,
        queue_len: d.queue_len,
        num_classes: d.num_classes,
    };
    let mut loss = PatchSelfDistillation::with_max_block_elems(
        backend,
        shape,
        d.crops,
        case.temperature.to_f64(),
        case.max_block_elems(),
    )?;
    let teachers = features(backend, "teachers", &host.teachers, d.dim, case.normalize)?;
    let students = features(backend, "students", &host.students, d.dim, case.normalize)?;
    let keys = features(backend, "keys", &host.keys, d.dim, case.normalize)?;
    let queue = features(backend, "queue", &host.queue, d.dim, case.normalize)?;
    let inputs = PbsdInputs::<B> {
        teachers: &teachers,
        students: &students,
        keys: &keys,
        queue: &queue,
        queue_filled: d.queue_filled,
    };
    let len = d.crops * d.batch * d.dim;
    let mut grad = backend.alloc(len)?;
    let value = loss.forward_backward(backend, &inputs, &mut grad)?;
    assert_finite(backend, "PBSD", value, &download(backend, &grad, len)?);
    Ok(())
}

/// Cross-entropy with the batch as rows and `dim` as classes.
fn cross_entropy<B: Backend>(backend: &B, d: &Dims, host: &HostInputs) -> Result<()> {
    let mut loss = CrossEntropy::new(backend, d.batch, d.dim)?;
    let mut logits = upload(backend, &host.queries)?;
    let labels = upload_labels(backend, &host.labels)?;
    let value = loss.forward_backward(backend, &mut logits, &labels)?;
    let len = d.batch * d.dim;
    assert_finite(
        backend,
        "cross-entropy",
        value,
        &download(backend, &logits, len)?,
    );
    Ok(())
}

fn run_all<B: Backend>(backend: &B, case: &Case) {
    let d = case.dims();
    let host = HostInputs::new(case, &d);
    // Errors are a valid outcome; only a panic or a non-finite Ok is a failure. A fault left
    // in the slot by one loss's error must not leak into the next, so each starts clean.
    let weightings = [
        PositiveWeighting::SupCon,
        PositiveWeighting::Decoupled {
            beta: case.beta.to_f64(),
        },
    ];
    for weighting in weightings {
        let _ = backend.take_fault();
        let _ = contrastive(backend, case, &d, &host, weighting);
    }
    let _ = backend.take_fault();
    let _ = pbsd(backend, case, &d, &host);
    let _ = backend.take_fault();
    let _ = cross_entropy(backend, &d, &host);
}

thread_local! {
    /// One single-threaded backend for the whole run: a thread pool per input would dominate.
    static CPU: CpuBackend<'static> =
        CpuBackend::with_threads(1).expect("a one-thread CPU backend");
}

fuzz_target!(|case: Case| {
    CPU.with(|cpu| run_all(cpu, &case));
    run_all(&ReferenceBackend::<f64>::new(), &case);
});
