//! Element-by-element comparison that reports the worst element.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

/// How far one compared output came to its tolerance, over all cases of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelStats {
    /// Elements compared.
    pub elements: usize,
    /// Outputs compared (calls).
    pub outputs: usize,
    /// Largest `|got - expected| / tol` seen (0 for exact outputs that matched).
    pub worst_ratio: f64,
    /// Largest absolute difference seen.
    pub worst_abs: f64,
    /// The element with the worst ratio: (expected, got, tolerance).
    pub worst_element: (f64, f64, f64),
}

/// Collects [`KernelStats`] per `kernel/output`.
#[derive(Debug, Default)]
pub struct Stats {
    map: RefCell<BTreeMap<String, KernelStats>>,
}

impl Stats {
    pub fn new() -> Self {
        Self::default()
    }
    fn record(&self, key: String, elements: usize, ratio: f64, abs: f64, at: (f64, f64, f64)) {
        let mut map = self.map.borrow_mut();
        let s = map.entry(key).or_default();
        s.elements += elements;
        s.outputs += 1;
        if ratio > s.worst_ratio {
            s.worst_ratio = ratio;
            s.worst_element = at;
        }
        if abs > s.worst_abs {
            s.worst_abs = abs;
        }
    }
    pub fn snapshot(&self) -> Vec<(String, KernelStats)> {
        self.map
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Row-major coordinates of flat index `i` within `dims` (the last dimension fastest); an index
/// past the product (a buffer's slack) is reported as such.
pub fn coords(i: usize, dims: &[usize]) -> String {
    if dims.is_empty() {
        return format!("[{i}]");
    }
    let total: usize = dims.iter().product();
    if i >= total {
        return format!("[{i}] (slack past the {total} elements of {dims:?})");
    }
    let mut rest = i;
    let mut c = vec![0; dims.len()];
    for (d, &n) in dims.iter().enumerate().rev() {
        c[d] = rest % n.max(1);
        rest /= n.max(1);
    }
    let parts: Vec<String> = c.iter().map(|v| v.to_string()).collect();
    format!("[{i}] = [{}] of {dims:?}", parts.join(", "))
}

/// `|got - expected| / tol` for one element: 0 when equal, infinity when the tolerance is 0 and
/// they differ, or when NaN-ness or infinities disagree.
fn ratio(got: f64, exp: f64, tol: f64) -> f64 {
    if exp.is_nan() || got.is_nan() {
        return if exp.is_nan() && got.is_nan() {
            0.0
        } else {
            f64::INFINITY
        };
    }
    if exp.is_infinite() || got.is_infinite() {
        return if got == exp { 0.0 } else { f64::INFINITY };
    }
    let d = (got - exp).abs();
    if d == 0.0 {
        0.0
    } else if tol > 0.0 {
        d / tol
    } else {
        f64::INFINITY
    }
}

/// What is being compared, for the failure message.
pub struct Site<'a> {
    pub kernel: &'a str,
    pub output: &'a str,
    /// The case (shape descriptor and parameters), printed with `{:?}`.
    pub case: &'a dyn fmt::Debug,
    /// Dimensions of the output for coordinates (row-major), or empty for flat indices.
    pub dims: &'a [usize],
    /// Describes a flat index instead of `dims` (strided layouts such as gemm's C).
    pub locate: Option<&'a dyn Fn(usize) -> String>,
}

impl Site<'_> {
    fn at(&self, i: usize) -> String {
        match self.locate {
            Some(f) => format!("[{i}] ({})", f(i)),
            None => coords(i, self.dims),
        }
    }
}

/// Compares `got` (backend) with `exp` (oracle) element by element against `tol`; records the
/// worst ratio in `stats` and returns a message naming the worst element when any element is
/// outside its tolerance.
pub fn compare(
    stats: &Stats,
    site: &Site<'_>,
    got: &[f64],
    exp: &[f64],
    tol: &[f64],
) -> Result<(), String> {
    let key = format!("{}/{}", site.kernel, site.output);
    if got.len() != exp.len() || tol.len() != exp.len() {
        return Err(format!(
            "{key}: internal length mismatch (got {}, expected {}, tol {})",
            got.len(),
            exp.len(),
            tol.len()
        ));
    }
    let mut worst = 0.0f64;
    let mut worst_i = usize::MAX;
    let mut worst_abs = 0.0f64;
    let mut bad = 0usize;
    let mut first_bad = Vec::new();
    for i in 0..exp.len() {
        let r = ratio(got[i], exp[i], tol[i]);
        if r > 1.0 {
            bad += 1;
            if first_bad.len() < 5 {
                first_bad.push(i);
            }
        }
        if r > worst || (worst_i == usize::MAX && r >= worst) {
            worst = r;
            worst_i = i;
        }
        let d = (got[i] - exp[i]).abs();
        if d.is_finite() && d > worst_abs {
            worst_abs = d;
        }
    }
    let at = if worst_i < exp.len() {
        (exp[worst_i], got[worst_i], tol[worst_i])
    } else {
        (0.0, 0.0, 0.0)
    };
    stats.record(key.clone(), exp.len(), worst.min(1.0e300), worst_abs, at);
    if bad == 0 {
        return Ok(());
    }
    let i = worst_i;
    let mut msg = String::new();
    let _ = write!(
        msg,
        "kernel `{}`, output `{}`: {bad} of {} elements outside tolerance.\n  worst element {}: expected {:e}, got {:e}, |diff| {:e}, tolerance {:e} (ratio {:.3e})",
        site.kernel,
        site.output,
        exp.len(),
        site.at(i),
        exp[i],
        got[i],
        (got[i] - exp[i]).abs(),
        tol[i],
        worst
    );
    if bad > 1 {
        let firsts: Vec<String> = first_bad
            .iter()
            .map(|&j| {
                format!(
                    "{} exp {:e} got {:e} tol {:e}",
                    site.at(j),
                    exp[j],
                    got[j],
                    tol[j]
                )
            })
            .collect();
        let _ = write!(msg, "\n  first offending elements: {}", firsts.join("; "));
    }
    let _ = write!(msg, "\n  case: {:?}", site.case);
    Err(msg)
}

/// Exact comparison of integer outputs.
pub fn compare_u32(stats: &Stats, site: &Site<'_>, got: &[u32], exp: &[u32]) -> Result<(), String> {
    let key = format!("{}/{}", site.kernel, site.output);
    let bad: Vec<usize> = (0..exp.len().min(got.len()))
        .filter(|&i| got[i] != exp[i])
        .collect();
    stats.record(
        key,
        exp.len(),
        if bad.is_empty() { 0.0 } else { 1e300 },
        0.0,
        (0.0, 0.0, 0.0),
    );
    if bad.is_empty() && got.len() == exp.len() {
        return Ok(());
    }
    let mut msg = format!(
        "kernel `{}`, output `{}`: {} of {} integers differ.",
        site.kernel,
        site.output,
        bad.len(),
        exp.len()
    );
    for &i in bad.iter().take(5) {
        let _ = write!(
            msg,
            "\n  element {}: expected {}, got {}",
            site.at(i),
            exp[i],
            got[i]
        );
    }
    let _ = write!(msg, "\n  case: {:?}", site.case);
    Err(msg)
}
