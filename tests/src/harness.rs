//! The plumbing every family shares: configuration, the backend/oracle pair, buffer helpers,
//! the proptest runner and the report.

use crate::compare::{compare, compare_u32, KernelStats, Site, Stats};
use crate::tol;
use dscl_core::backend::prelude::*;
use dscl_core::reference::ReferenceBackend;
use dscl_core::{Backend, BufferLen, Element, Fault};
use num_traits::{Float, Zero};
use proptest::strategy::Strategy;
use proptest::test_runner::{
    Config as ProptestConfig, RngSeed, TestCaseError, TestError, TestRunner,
};
use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, Instant};

/// The oracle every backend is compared with.
pub type Oracle = ReferenceBackend<f64>;
/// An oracle buffer.
pub type OBuf = <Oracle as MemoryOps>::Buffer;
/// An oracle index buffer.
pub type OIdx = <Oracle as MemoryOps>::IndexBuffer;

/// The result of one case.
pub type Res<T> = Result<T, TestCaseError>;

/// Shape ranges of the random cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// The full ranges (the default).
    Full,
    /// Smaller shapes, for backends with little memory (arena mode) or slow devices
    /// (a software Vulkan driver).
    Small,
}

/// How much of the suite to run, and how strictly.
#[derive(Clone, Debug)]
pub struct Config {
    /// Multiplies every family's case count (`DSCL_CONFORMANCE_CASES`, default 1).
    pub cases_factor: f64,
    /// Shape ranges.
    pub size: Size,
    /// Base seed of the random cases (`DSCL_CONFORMANCE_SEED`, default fixed so runs repeat);
    /// each family derives its own from it.
    pub seed: u64,
    /// Multiplies every tolerance (1 for the CPU backend and the reference).
    pub tol_scale: f64,
}

/// The default seed: runs are reproducible unless `DSCL_CONFORMANCE_SEED` says otherwise.
pub const DEFAULT_SEED: u64 = 0x00d5_c1c0_4f04_2024;

impl Default for Config {
    fn default() -> Self {
        Config {
            cases_factor: 1.0,
            size: Size::Full,
            seed: DEFAULT_SEED,
            tol_scale: 1.0,
        }
    }
}

impl Config {
    /// The default configuration, with `DSCL_CONFORMANCE_CASES` (a positive factor on every
    /// family's case count) and `DSCL_CONFORMANCE_SEED` (a u64) read from the environment.
    pub fn from_env() -> Self {
        let mut c = Config::default();
        if let Ok(v) = std::env::var("DSCL_CONFORMANCE_CASES") {
            match v.trim().parse::<f64>() {
                Ok(f) if f > 0.0 && f.is_finite() => c.cases_factor = f,
                _ => panic!("DSCL_CONFORMANCE_CASES must be a positive number, got {v:?}"),
            }
        }
        if let Ok(v) = std::env::var("DSCL_CONFORMANCE_SEED") {
            let v = v.trim();
            let parsed = if let Some(hex) = v.strip_prefix("0x") {
                u64::from_str_radix(hex, 16)
            } else {
                v.parse::<u64>()
            };
            match parsed {
                Ok(s) => c.seed = s,
                Err(_) => panic!("DSCL_CONFORMANCE_SEED must be a u64, got {v:?}"),
            }
        }
        c
    }

    /// [`Config::from_env`] with small shapes and a quarter of the cases.
    pub fn small_from_env() -> Self {
        let mut c = Config::from_env();
        c.size = Size::Small;
        c.cases_factor *= 0.25;
        c
    }

    pub fn with_size(mut self, size: Size) -> Self {
        self.size = size;
        self
    }
    pub fn with_cases_factor(mut self, f: f64) -> Self {
        self.cases_factor = f;
        self
    }
    pub fn with_tol_scale(mut self, s: f64) -> Self {
        self.tol_scale = s;
        self
    }

    /// `full` with [`Size::Full`], `small` with [`Size::Small`].
    pub fn dim(&self, full: usize, small: usize) -> usize {
        match self.size {
            Size::Full => full,
            Size::Small => small,
        }
    }

    pub(crate) fn cases(&self, base: u32) -> u32 {
        ((base as f64 * self.cases_factor).ceil() as u32).max(1)
    }

    pub(crate) fn seed_for(&self, family: &str) -> u64 {
        // FNV-1a of the family name, mixed into the base seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in family.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.seed ^ h
    }
}

/// One buffer on the backend under test and its twin on the oracle, with identical contents.
pub struct Dual<B: Backend> {
    pub be: B::Buffer,
    pub rf: OBuf,
}

/// One index buffer on both sides.
pub struct DualIdx<B: Backend> {
    pub be: B::IndexBuffer,
    pub rf: OIdx,
}

/// Turns a library result into a case result that says which call failed.
pub trait OrFail<T> {
    fn or_fail(self, what: &str) -> Res<T>;
}

impl<T> OrFail<T> for dscl_core::Result<T> {
    fn or_fail(self, what: &str) -> Res<T> {
        self.map_err(|e| TestCaseError::fail(format!("{what} returned Err({e:?}) on a valid call")))
    }
}

/// A failed case with `msg`.
pub fn fail<T>(msg: impl Into<String>) -> Res<T> {
    Err(TestCaseError::fail(msg.into()))
}

/// The backend under test and the oracle for one case.
pub struct Ctx<'a, B: Backend> {
    pub be: B,
    pub rf: Oracle,
    pub stats: &'a Stats,
    pub cfg: &'a Config,
}

impl<'a, B: Backend> Ctx<'a, B> {
    pub fn new(be: B, stats: &'a Stats, cfg: &'a Config) -> Self {
        Ctx {
            be,
            rf: Oracle::new(),
            stats,
            cfg,
        }
    }

    /// Machine epsilon of the backend's element type, times the configured tolerance scale.
    pub fn eps(&self) -> f64 {
        B::Elem::epsilon().widen() * self.cfg.tol_scale
    }

    /// The element type's smallest normal number (for underflow terms of tolerances).
    pub fn tiny(&self) -> f64 {
        B::Elem::min_positive_value().widen()
    }

    /// `v` as the backend's element type.
    pub fn elems(v: &[f32]) -> Vec<B::Elem> {
        v.iter().map(|&x| B::Elem::from_f64(x as f64)).collect()
    }

    /// A buffer on each side holding `data`.
    pub fn buf(&self, data: &[f32]) -> Res<Dual<B>> {
        let mut be = self.be.alloc(data.len()).or_fail("backend alloc")?;
        if be.len() != data.len() {
            return fail(format!(
                "backend alloc({}) returned a buffer of length {}",
                data.len(),
                be.len()
            ));
        }
        self.be
            .upload(&mut be, 0, &Self::elems(data))
            .or_fail("backend upload")?;
        let mut rf = self.rf.alloc(data.len()).or_fail("oracle alloc")?;
        let wide: Vec<f64> = data.iter().map(|&x| x as f64).collect();
        self.rf.upload(&mut rf, 0, &wide).or_fail("oracle upload")?;
        Ok(Dual { be, rf })
    }

    /// An index buffer on each side holding `data`.
    pub fn idx(&self, data: &[u32]) -> Res<DualIdx<B>> {
        let mut be = self
            .be
            .alloc_index(data.len())
            .or_fail("backend alloc_index")?;
        self.be
            .upload_index(&mut be, 0, data)
            .or_fail("backend upload_index")?;
        let mut rf = self
            .rf
            .alloc_index(data.len())
            .or_fail("oracle alloc_index")?;
        self.rf
            .upload_index(&mut rf, 0, data)
            .or_fail("oracle upload_index")?;
        Ok(DualIdx { be, rf })
    }

    /// A backend buffer holding `data` (no oracle twin).
    pub fn be_buf(&self, data: &[f32]) -> Res<B::Buffer> {
        let mut be = self.be.alloc(data.len()).or_fail("backend alloc")?;
        self.be
            .upload(&mut be, 0, &Self::elems(data))
            .or_fail("backend upload")?;
        Ok(be)
    }

    /// Downloads a whole backend buffer as f64.
    pub fn read_be(&self, b: &B::Buffer) -> Res<Vec<f64>> {
        let mut out = vec![B::Elem::zero(); b.len()];
        self.be
            .download(b, 0, &mut out)
            .or_fail("backend download")?;
        Ok(out.into_iter().map(|x| x.widen()).collect())
    }

    /// Downloads a whole oracle buffer.
    pub fn read_rf(&self, b: &OBuf) -> Res<Vec<f64>> {
        let mut out = vec![0.0f64; b.len()];
        self.rf
            .download(b, 0, &mut out)
            .or_fail("oracle download")?;
        Ok(out)
    }

    pub fn read_be_idx(&self, b: &B::IndexBuffer) -> Res<Vec<u32>> {
        let mut out = vec![0u32; b.len()];
        self.be
            .download_index(b, 0, &mut out)
            .or_fail("backend download_index")?;
        Ok(out)
    }

    pub fn read_rf_idx(&self, b: &OIdx) -> Res<Vec<u32>> {
        let mut out = vec![0u32; b.len()];
        self.rf
            .download_index(b, 0, &mut out)
            .or_fail("oracle download_index")?;
        Ok(out)
    }

    /// The oracle's contents of `d`, rounded to f32: to feed one kernel's results into the next
    /// on both sides identically.
    pub fn oracle_f32(&self, d: &Dual<B>) -> Res<Vec<f32>> {
        Ok(self.read_rf(&d.rf)?.iter().map(|&x| x as f32).collect())
    }

    /// Compares a dual buffer, element by element, with tolerance `tol` (its length is the
    /// buffer's, slack included).
    pub fn check(
        &self,
        kernel: &str,
        output: &str,
        case: &dyn fmt::Debug,
        dims: &[usize],
        d: &Dual<B>,
        tol: &[f64],
    ) -> Res<()> {
        let got = self.read_be(&d.be)?;
        let exp = self.read_rf(&d.rf)?;
        self.check_values(kernel, output, case, dims, &got, &exp, tol)
    }

    /// [`Ctx::check`] on downloaded values.
    #[allow(clippy::too_many_arguments)]
    pub fn check_values(
        &self,
        kernel: &str,
        output: &str,
        case: &dyn fmt::Debug,
        dims: &[usize],
        got: &[f64],
        exp: &[f64],
        tol: &[f64],
    ) -> Res<()> {
        self.check_located(kernel, output, case, dims, None, got, exp, tol)
    }

    /// [`Ctx::check_values`] with a function that describes a flat index (strided layouts).
    #[allow(clippy::too_many_arguments)]
    pub fn check_located(
        &self,
        kernel: &str,
        output: &str,
        case: &dyn fmt::Debug,
        dims: &[usize],
        locate: Option<&dyn Fn(usize) -> String>,
        got: &[f64],
        exp: &[f64],
        tol: &[f64],
    ) -> Res<()> {
        let site = Site {
            kernel,
            output,
            case,
            dims,
            locate,
        };
        // Gradual underflow: below the smallest normal number results keep only an absolute
        // precision, so every non-zero tolerance gets that floor (exact checks stay exact).
        let floor = tol::UNDERFLOW_FLOOR * B::Elem::min_positive_value().widen();
        let tol: Vec<f64> = tol
            .iter()
            .map(|&t| if t > 0.0 { t + floor } else { t })
            .collect();
        compare(self.stats, &site, got, exp, &tol).map_err(TestCaseError::fail)
    }

    /// Compares a dual index buffer exactly.
    pub fn check_idx(
        &self,
        kernel: &str,
        output: &str,
        case: &dyn fmt::Debug,
        dims: &[usize],
        d: &DualIdx<B>,
    ) -> Res<()> {
        let got = self.read_be_idx(&d.be)?;
        let exp = self.read_rf_idx(&d.rf)?;
        let site = Site {
            kernel,
            output,
            case,
            dims,
            locate: None,
        };
        compare_u32(self.stats, &site, &got, &exp).map_err(TestCaseError::fail)
    }

    /// Both sides' pending faults.
    pub fn faults(&self) -> Res<(Option<Fault>, Option<Fault>)> {
        let be = self.be.take_fault().or_fail("backend take_fault")?;
        let rf = self.rf.take_fault().or_fail("oracle take_fault")?;
        Ok((be, rf))
    }

    /// Fails unless neither side recorded a fault (after a clean call).
    pub fn no_faults(&self, kernel: &str, case: &dyn fmt::Debug) -> Res<()> {
        let (be, rf) = self.faults()?;
        if let Some(f) = rf {
            return fail(format!(
                "suite or oracle bug: the oracle recorded {f:?} in `{kernel}` on clean inputs\n  case: {case:?}"
            ));
        }
        if let Some(f) = be {
            return fail(format!(
                "kernel `{kernel}` recorded a spurious fault {f:?} on clean inputs (the oracle recorded none)\n  case: {case:?}"
            ));
        }
        Ok(())
    }
}

/// What one family's run found (it panics instead when a case fails).
#[derive(Clone, Debug)]
pub struct FamilyReport {
    pub family: &'static str,
    pub backend: String,
    pub cases: u32,
    pub seed: u64,
    pub elapsed: Duration,
    /// Per `kernel/output`: elements compared and the worst error-to-tolerance ratio.
    pub kernels: Vec<(String, KernelStats)>,
}

impl fmt::Display for FamilyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<14} {:>5} cases  {:>8.2?}  seed {:#x}",
            self.family, self.cases, self.elapsed, self.seed
        )?;
        for (k, s) in &self.kernels {
            write!(
                f,
                "    {:<44} {:>10} elements  worst err/tol {:.3}",
                k, s.elements, s.worst_ratio
            )?;
            if s.worst_ratio > 0.0 {
                let (e, g, t) = s.worst_element;
                write!(f, "  (expected {e:.6e}, got {g:.6e}, tol {t:.2e})")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// The whole suite's report.
#[derive(Clone, Debug)]
pub struct Report {
    pub backend: String,
    pub families: Vec<FamilyReport>,
}

impl Report {
    pub fn elapsed(&self) -> Duration {
        self.families.iter().map(|f| f.elapsed).sum()
    }
    pub fn cases(&self) -> u32 {
        self.families.iter().map(|f| f.cases).sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conformance of `{}`: {} families, {} cases, {:.2?}, all passed",
            self.backend,
            self.families.len(),
            self.cases(),
            self.elapsed()
        )?;
        for fam in &self.families {
            write!(f, "  {fam}")?;
        }
        Ok(())
    }
}

/// Builds the backend under test, one per case. Implemented for every closure
/// `FnMut() -> B`; implement it directly for a backend that borrows memory the factory owns
/// (an arena backend: `make` hands out a backend over the factory's arena, reused by the next
/// case once this one is dropped).
pub trait Factory {
    type Backend<'a>: Backend
    where
        Self: 'a;
    fn make(&mut self) -> Self::Backend<'_>;
}

impl<B: Backend, F: FnMut() -> B> Factory for F {
    type Backend<'a>
        = B
    where
        Self: 'a;
    fn make(&mut self) -> B {
        self()
    }
}

/// One family's case function, generic over the backend (so it can run on a backend type that
/// borrows from the factory).
pub(crate) trait CaseFn<V> {
    fn run<B: Backend>(&self, ctx: &Ctx<'_, B>, value: V) -> Res<()>;
}

/// Runs `cases` random cases of one family and returns its report, or panics with the shrunk
/// failing case.
pub(crate) fn run_family<Fac, S, C>(
    family: &'static str,
    cfg: &Config,
    make: &RefCell<Fac>,
    base_cases: u32,
    strategy: S,
    case: C,
) -> FamilyReport
where
    Fac: Factory,
    S: Strategy,
    C: CaseFn<S::Value>,
{
    let stats = Stats::new();
    let cases = cfg.cases(base_cases);
    let seed = cfg.seed_for(family);
    let backend = make.borrow_mut().make().device_name().to_string();
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 400,
        max_shrink_time: 60_000,
        max_global_rejects: 10 * cases + 100,
        rng_seed: RngSeed::Fixed(seed),
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let start = Instant::now();
    let result = runner.run(&strategy, |value| {
        let mut factory = make.borrow_mut();
        let ctx = Ctx::new(factory.make(), &stats, cfg);
        case.run(&ctx, value)
    });
    let elapsed = start.elapsed();
    match result {
        Ok(()) => FamilyReport {
            family,
            backend,
            cases,
            seed,
            elapsed,
            kernels: stats.snapshot(),
        },
        Err(TestError::Fail(reason, value)) => panic!(
            "\nCONFORMANCE FAILURE: backend `{backend}`, family `{family}`\n{reason}\n\
             minimal failing input (after shrinking): {value:?}\n\
             replay: DSCL_CONFORMANCE_SEED={:#x} (family seed {seed:#x})\n",
            cfg.seed
        ),
        Err(TestError::Abort(reason)) => panic!(
            "conformance run of family `{family}` on `{backend}` aborted: {reason} (seed {seed:#x})"
        ),
    }
}
