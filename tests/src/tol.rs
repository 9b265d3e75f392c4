//! Tolerances of the conformance suite, and why.
//!
//! The oracle computes in f64 on exactly the inputs the backend gets (f32 values, widened), so
//! the only difference is the backend's own rounding. Every check is per element:
//!
//! `|got - expected| <= tol_e`, with `tol_e = K * eps * growth(n) * mag_e`
//!
//! - `eps` is the machine epsilon of the backend's element type (`2^-23` for f32, twice the
//!   unit roundoff `u`), so the same bounds shrink by 2^29 when the backend is f64.
//! - `mag_e` is the magnitude the result is computed from, not the result itself: for a dot
//!   product `sum |a_p| |b_p|`, for an elementwise chain the sum of the absolute values of its
//!   terms. A result that cancels to near zero keeps the absolute error of the terms it was
//!   computed from, so a relative bound on `|expected|` alone would be wrong there, while one
//!   loose absolute number would hide real bugs on small values.
//! - `growth(n)` models accumulation over `n` terms. The worst case of recursive summation is
//!   `n * u`, but with rounding errors of random sign (our random inputs; Higham, "Accuracy and
//!   Stability of Numerical Algorithms", 2nd ed., sec. 2.8 and 4.2) the error grows like
//!   `sqrt(n) * u`; blocked and pairwise sums (every real GEMM, the required `sum`) do better
//!   still. We use `sqrt(n) + 2`: the `+ 2` covers the final rounding of the result and the
//!   conversion of f64 scalars (alpha, eps, momentum) to the element type.
//! - `K` is a safety factor: `K * eps = 2K * u`, so `K = 2` already leaves a margin of about
//!   four standard deviations over the random-walk estimate.
//!
//! Exact results (copies, fills, ReLU, max-pool values and argmax, masked columns that must be
//! 0, elements a kernel must leave untouched) are compared with tolerance 0.
//!
//! Scale all tolerances with [`crate::harness::Config::tol_scale`] for a backend with weaker
//! documented guarantees (for example a GPU using fast-math `exp`); the CPU backend and the f32
//! reference must pass at 1.

/// Elementwise chains of a few roundings (`scale`, `axpy`, `add`, `bias_add`, EMA, inference
/// batch norm, the scalar-to-element conversions): each rounding contributes at most `u`
/// relative to the terms, about 4 roundings in the longest chain, `4 * eps = 8 u`.
pub const ELEMENTWISE: f64 = 4.0;

/// SGD with momentum: up to 7 roundings (`g + wd p`, `m v`, `(1 - d) g`, the sum, the Nesterov
/// term, `lr * dir`, `p - ...`) plus the conversions of four scalars.
pub const SGD: f64 = 8.0;

/// Plain reductions over `n` terms (`bias_backward`, global average pooling, the batch-norm
/// channel sums, max-pool backward's overlapping windows): `REDUCTION * eps * (sqrt(n) + 2)`
/// times the sum of absolute terms.
pub const REDUCTION: f64 = 2.0;

/// `sum` is documented as pairwise or f64-accumulated, so its bound grows like `log2(n)`, not
/// `sqrt(n)`: `SUM * eps * (log2(n) + 2) * |scale| * sum |x|`.
pub const SUM: f64 = 2.0;

/// GEMM: `GEMM * eps * (sqrt(k) + 2) * (|alpha| sum_p |a_ip| |b_pj| + |beta| |c_ij|)`.
pub const GEMM: f64 = 2.0;

/// Convolution (all three passes are GEMMs over im2col'd data): the same bound with `k` the
/// reduction length (`in_c*kh*kw` forward, `out_c*kh*kw` backward-data,
/// `batch*out_h*out_w` backward-filter) and the magnitude the same convolution of `|x|`, `|w|`.
pub const CONV: f64 = 2.0;

/// Batch norm: mean and variance are reductions over the channel's `n` values; errors in the
/// mean, in `1/sqrt(var + eps)` and in the final affine map add up, so a bit more margin.
/// The variance term is scaled by `cond = E[x^2] / (var + eps) + 1`, which admits a one-pass
/// `E[x^2] - mean^2` variance on our moderately offset inputs (offset/std <= 3) as well as the
/// two-pass and Welford forms.
pub const BATCH_NORM: f64 = 4.0;

/// Row-wise softmax, log-sum-exp and L2 normalisation over `n` valid columns:
/// `ROWS * eps * (sqrt(n) + 2 + |z_j| + E_p|z|)` relative for softmax (z = x - max; an error
/// of `u |z|` in `z` is a relative error `u |z|` of `exp(z)`), the same plus `|max| + |lse|`
/// absolute for log-sum-exp, `ROWS * eps * (sqrt(n) + 2)` relative for norms.
pub const ROWS: f64 = 4.0;

/// The fused loss kernels (contrastive rows, soft and hard cross-entropy): `log p_ij` carries
/// the log-sum-exp's absolute error, `p_ij` the same relative error.
/// Loss: `LOSS * eps * K_i`, gradient: `|grad_scale| * LOSS * eps * (p_ij * K_i + w_ij / W_i)`,
/// with `K_i = 4 max_j |s_ij| + sqrt(n) + ln(n) + 2`.
pub const LOSS: f64 = 4.0;

/// ROI-align: sample coordinates are computed from box coordinates up to about `1.5 * size`
/// feature cells, so their absolute error is about `size * u`, and each bilinear weight moves by
/// as much: `ROI_ALIGN * eps * (max(height, width) + sqrt(samples) + 2) * max|f|` over the
/// plane sampled (forward), and the same times the total `|grad_output|` reaching the plane
/// (backward). Cases with a sample within 1e-3 cells of a discontinuity of torchvision's
/// sampling (`-1`, `size`, an integer adaptive grid size) are regenerated: there a 1-ulp
/// difference legitimately changes the answer.
pub const ROI_ALIGN: f64 = 8.0;

/// Absolute floor added to every non-zero tolerance, in units of the element type's smallest
/// normal number (`f32::MIN_POSITIVE` = 1.2e-38). Below it a result keeps only an absolute
/// precision, and a backend may flush it to 0 (GPU flush-to-zero, a fast `exp` that returns 0
/// below the normal range; the CPU backend does): a softmax probability of `exp(-87.5)` may come
/// back as 0. Twice the smallest normal covers a flushed value just above the threshold. Far
/// below any value that matters; exact comparisons (tolerance 0) get no floor. Where a flushed
/// intermediate is multiplied afterwards (soft cross-entropy's `q * sum(targets)`), the check
/// adds the same floor times that factor.
pub const UNDERFLOW_FLOOR: f64 = 2.0;

/// `sqrt(n) + 2`.
pub fn growth(n: usize) -> f64 {
    (n as f64).sqrt() + 2.0
}

/// `log2(n) + 2` (pairwise summation).
pub fn growth_pairwise(n: usize) -> f64 {
    (n.max(1) as f64).log2() + 2.0
}
