//! The losses on arbitrary shapes, labels, values and hyperparameters, on the CPU backend (f32)
//! and the f64 reference backend.
//!
//! Contract: every call returns an error, or a finite loss with finite gradients; nothing
//! panics. Values mix ordinary numbers with NaN, infinities, denormals, zeros and magnitudes
//! at the edge of the element type; temperature and beta include zero, negative, tiny, huge
//! and NaN. Sizes stay small (B <= 16, d <= 32, K <= 32) so each run takes microseconds.
#![no_main]

use arbitrary::Arbitrary;
use dscl_core::loss::host::{download_values, upload_labels, upload_values, HostProblem};
use dscl_core::loss::{
    ContrastiveShape, CrossEntropy, L2Normalize, PatchSelfDistillation, PositiveWeighting,
    QueryGradient, SupervisedContrastive,
};
use dscl_core::reference::ReferenceBackend;
use dscl_core::{Backend, Result};
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

impl Case {
    /// The case as a host problem, its sizes reduced to the small ranges the target explores
    /// and one buffer an element short if the case says so.
    fn problem(&self) -> HostProblem {
        let queue_len = usize::from(self.queue_len % 33);
        let shape = ContrastiveShape {
            // 0 is allowed on purpose: a zero batch, dimension or class count must be refused.
            batch: usize::from(self.batch % 17),
            dim: usize::from(self.dim % 33),
            queue_len,
            num_classes: u32::from(self.num_classes % 12),
        };
        // Up to one past the queue, which must be refused.
        let queue_filled = usize::from(self.queue_filled) % (queue_len + 2);
        let crops = usize::from(self.crops % 5);
        let (b, d, filled) = (shape.batch, shape.dim, queue_filled.min(queue_len));
        let mut p = HostProblem {
            shape,
            queue_filled,
            crops,
            queries: self.values(b * d, 0),
            keys: self.values(b * d, 1),
            queue: self.values(filled * d, 2),
            labels: self.labels(b, 0, shape.num_classes),
            queue_labels: self.labels(filled, 1, shape.num_classes),
            teachers: self.values(crops * b * d, 3),
            students: self.values(crops * b * d, 4),
        };
        match self.short {
            ShortBuffer::None => {}
            ShortBuffer::Queries => drop(p.queries.pop()),
            ShortBuffer::Keys => drop(p.keys.pop()),
            ShortBuffer::Queue => drop(p.queue.pop()),
            ShortBuffer::Labels => drop(p.labels.pop()),
            ShortBuffer::Teachers => drop(p.teachers.pop()),
            ShortBuffer::Students => drop(p.students.pop()),
        }
        p
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

/// Replaces `buf` (the upload of `host`, rows of `dim`) by its rows L2-normalised on the
/// device, as training feeds the losses.
fn normalize<B: Backend>(
    backend: &B,
    what: &'static str,
    buf: &mut B::Buffer,
    host: &[f64],
    dim: usize,
) -> Result<()> {
    if dim == 0 {
        return Ok(());
    }
    let mut out = backend.alloc(host.len())?;
    L2Normalize::new(backend, host.len() / dim, dim)?
        .forward_checked(backend, what, buf, &mut out)?;
    *buf = out;
    Ok(())
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
    host: &HostProblem,
    weighting: PositiveWeighting,
) -> Result<()> {
    let mut loss = SupervisedContrastive::new(
        backend,
        host.shape,
        weighting,
        case.temperature.to_f64(),
        case.max_block_elems(),
    )?;
    let mut device = host.upload(backend)?;
    if case.normalize {
        let dim = host.shape.dim;
        normalize(backend, "queries", &mut device.queries, &host.queries, dim)?;
        normalize(backend, "keys", &mut device.keys, &host.keys, dim)?;
        normalize(backend, "queue", &mut device.queue, &host.queue, dim)?;
    }
    let mode = if case.anchor_only {
        QueryGradient::AnchorOnly
    } else {
        QueryGradient::ThroughContrastSet
    };
    let len = host.shape.batch * host.shape.dim;
    let mut grad = backend.alloc(len)?;
    let value = loss.forward_backward(backend, &device.contrastive_inputs(), mode, &mut grad)?;
    let what = format!("{weighting:?} ({mode:?})");
    assert_finite(
        backend,
        &what,
        value,
        &download_values(backend, &grad, len)?,
    );
    Ok(())
}

fn pbsd<B: Backend>(backend: &B, case: &Case, host: &HostProblem) -> Result<()> {
    let mut loss = PatchSelfDistillation::with_max_block_elems(
        backend,
        host.shape,
        host.crops,
        case.temperature.to_f64(),
        case.max_block_elems(),
    )?;
    let mut device = host.upload(backend)?;
    if case.normalize {
        let dim = host.shape.dim;
        normalize(
            backend,
            "teachers",
            &mut device.teachers,
            &host.teachers,
            dim,
        )?;
        normalize(
            backend,
            "students",
            &mut device.students,
            &host.students,
            dim,
        )?;
        normalize(backend, "keys", &mut device.keys, &host.keys, dim)?;
        normalize(backend, "queue", &mut device.queue, &host.queue, dim)?;
    }
    let len = host.crops * host.shape.batch * host.shape.dim;
    let mut grad = backend.alloc(len)?;
    let value = loss.forward_backward(backend, &device.pbsd_inputs(), &mut grad)?;
    assert_finite(
        backend,
        "PBSD",
        value,
        &download_values(backend, &grad, len)?,
    );
    Ok(())
}

/// Cross-entropy with the batch as rows and `dim` as classes.
fn cross_entropy<B: Backend>(backend: &B, host: &HostProblem) -> Result<()> {
    let (batch, dim) = (host.shape.batch, host.shape.dim);
    let mut loss = CrossEntropy::new(backend, batch, dim)?;
    let mut logits = upload_values(backend, &host.queries)?;
    let labels = upload_labels(backend, &host.labels)?;
    let value = loss.forward_backward(backend, &mut logits, &labels)?;
    assert_finite(
        backend,
        "cross-entropy",
        value,
        &download_values(backend, &logits, batch * dim)?,
    );
    Ok(())
}

fn run_all<B: Backend>(backend: &B, case: &Case) {
    let host = case.problem();
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
        let _ = contrastive(backend, case, &host, weighting);
    }
    let _ = backend.take_fault();
    let _ = pbsd(backend, case, &host);
    let _ = backend.take_fault();
    let _ = cross_entropy(backend, &host);
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
