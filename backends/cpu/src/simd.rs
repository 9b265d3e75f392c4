//! Vectorisation helpers: runtime dispatch to the widest SIMD level the CPU has, a fast
//! vectorisable `exp`, and blocked reductions that keep f32 speed with f64-grade sums.
//!
//! Kernels are written as plain loops over fixed-width lane arrays (`[f32; LANES]`); inside
//! [`dispatch`] they are compiled with AVX2+FMA (or AVX-512) enabled, and LLVM turns the lane
//! arrays into vector registers. Helpers called from a dispatched closure must be
//! `#[inline(always)]` so they inherit the target features.

/// Independent accumulators per reduction: 16 f32 = one AVX-512 register or two AVX2 ones.
pub(crate) const LANES: usize = 16;

/// Elements summed in f32 lanes before the partial sums are added into an f64 total: short
/// enough that the f32 partials carry no visible rounding (each lane sums BLOCK / LANES values).
pub(crate) const BLOCK: usize = 512;

/// Runs `f` compiled for the best instruction set available at run time (pulp's dispatch:
/// x86-64-v3/v4 when present, scalar otherwise). Without `std` the choice is made at compile
/// time from the target's features.
#[inline(always)]
pub(crate) fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// `a * b + c`, fused where the instruction set has FMA (inside [`dispatch`] on x86-64-v3/v4
/// and on aarch64); without `std` (no `mul_add` in `core`) a plain multiply-add.
#[inline(always)]
pub(crate) fn fma(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(feature = "std")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(feature = "std"))]
    {
        a * b + c
    }
}

/// `e^x` in f32, branch-free so that it vectorises: Cody-Waite reduction `x = n ln2 + r`,
/// `|r| <= ln2 / 2`, and the Cephes degree-5 polynomial for `e^r` (max relative error about
/// 1.5e-7 over the normal range, checked against f64 in the tests). The scaling by `2^n` is
/// done in two normal steps, so results between `2^-149` and `2^-126` come out as correctly
/// scaled subnormals (gradual underflow, as libm) rather than 0. Returns 0 at and below `-104`
/// (where e^x rounds to 0), +inf above `88.72`, NaN for NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LO: f32 = -104.0;
    const HI: f32 = 88.72;
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    // ln 2 split so that n * C1 is exact for |n| < 2^9.
    const C1: f32 = 355.0 / 512.0;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to the nearest integer and leaves that integer in the low
    // mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    const P0: f32 = 1.987_569_1e-4;
    const P1: f32 = 1.398_199_9e-3;
    const P2: f32 = 8.333_452e-3;
    const P3: f32 = 4.166_579_6e-2;
    const P4: f32 = 1.666_666_5e-1;
    const P5: f32 = 0.5;

    // Clamp with comparisons that let NaN through (it then propagates through y).
    let xc = if x > HI { HI } else { x };
    let xc = if xc < LO { LO } else { xc };
    let t = fma(xc, LOG2E, MAGIC);
    let n = t - MAGIC;
    let r = fma(-n, C2, fma(-n, C1, xc));
    let p = fma(fma(fma(fma(fma(P0, r, P1), r, P2), r, P3), r, P4), r, P5);
    let y = fma(p, r * r, r) + 1.0;
    // n in [-150, 128] as an integer, split n = n1 + n2 with both 2^n1 and 2^n2 normal. At
    // x = LO, y * 2^-150 < 2^-150 rounds to 0.
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let n1 = ni >> 1;
    let s1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((ni - n1 + 127) as u32) << 23);
    let res = y * s1 * s2;
    if x > HI {
        f32::INFINITY
    } else {
        res
    }
}

/// Maximum of `x` (NaN ignored; -inf for an empty slice).
#[inline(always)]
pub(crate) fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for ch in &mut chunks {
        for l in 0..LANES {
            acc[l] = if ch[l] > acc[l] { ch[l] } else { acc[l] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(chunks.remainder()) {
        if v > m {
            m = v;
        }
    }
    m
}

/// `sum_e e^(x[e] - shift)` without storing (f32 lanes per block, f64 across blocks).
#[inline(always)]
pub(crate) fn sum_exp(x: &[f32], shift: f32) -> f64 {
    let mut total = 0.0f64;
    for block in x.chunks(BLOCK) {
        let mut acc = [0.0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for ch in &mut chunks {
            for l in 0..LANES {
                acc[l] += exp(ch[l] - shift);
            }
        }
        for (l, &v) in chunks.remainder().iter().enumerate() {
            acc[l] += exp(v - shift);
        }
        total += reduce(&acc);
    }
    total
}

/// `dst[e] = e^(src[e] - shift)`, returning the sum (same precision as [`sum_exp`]).
#[inline(always)]
pub(crate) fn exp_to(src: &[f32], dst: &mut [f32], shift: f32) -> f64 {
    let mut total = 0.0f64;
    for (sb, db) in src.chunks(BLOCK).zip(dst.chunks_mut(BLOCK)) {
        let mut acc = [0.0f32; LANES];
        let mut sc = sb.chunks_exact(LANES);
        let mut dc = db.chunks_exact_mut(LANES);
        for (s, d) in (&mut sc).zip(&mut dc) {
            for l in 0..LANES {
                let e = exp(s[l] - shift);
                d[l] = e;
                acc[l] += e;
            }
        }
        for (l, (s, d)) in sc.remainder().iter().zip(dc.into_remainder()).enumerate() {
            let e = exp(*s - shift);
            *d = e;
            acc[l] += e;
        }
        total += reduce(&acc);
    }
    total
}

/// `x[e] = e^(x[e] - shift)` in place, returning the sum.
#[inline(always)]
pub(crate) fn exp_in_place(x: &mut [f32], shift: f32) -> f64 {
    let mut total = 0.0f64;
    for block in x.chunks_mut(BLOCK) {
        let mut acc = [0.0f32; LANES];
        let mut chunks = block.chunks_exact_mut(LANES);
        for ch in &mut chunks {
            for l in 0..LANES {
                let e = exp(ch[l] - shift);
                ch[l] = e;
                acc[l] += e;
            }
        }
        for (l, v) in chunks.into_remainder().iter_mut().enumerate() {
            let e = exp(*v - shift);
            *v = e;
            acc[l] += e;
        }
        total += reduce(&acc);
    }
    total
}

/// `x[e] *= a`.
#[inline(always)]
pub(crate) fn scale(x: &mut [f32], a: f32) {
    for v in x.iter_mut() {
        *v *= a;
    }
}

/// Sum of `x` (f32 lanes per block, f64 across blocks).
#[inline(always)]
pub(crate) fn sum(x: &[f32]) -> f64 {
    let mut total = 0.0f64;
    for block in x.chunks(BLOCK) {
        let mut acc = [0.0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for ch in &mut chunks {
            for l in 0..LANES {
                acc[l] += ch[l];
            }
        }
        for (l, &v) in chunks.remainder().iter().enumerate() {
            acc[l] += v;
        }
        total += reduce(&acc);
    }
    total
}

/// Dot product of `a` and `b` (f32 lanes per block, f64 across blocks).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut total = 0.0f64;
    for (ab, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut acc = [0.0f32; LANES];
        let mut ac = ab.chunks_exact(LANES);
        let mut bc = bb.chunks_exact(LANES);
        for (x, y) in (&mut ac).zip(&mut bc) {
            for l in 0..LANES {
                acc[l] += x[l] * y[l];
            }
        }
        for (l, (x, y)) in ac.remainder().iter().zip(bc.remainder()).enumerate() {
            acc[l] += x * y;
        }
        total += reduce(&acc);
    }
    total
}

/// Adds the lanes pairwise in f64.
#[inline(always)]
pub(crate) fn reduce(acc: &[f32; LANES]) -> f64 {
    let mut v = [0.0f64; LANES];
    for l in 0..LANES {
        v[l] = acc[l] as f64;
    }
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            v[l] += v[l + w];
        }
        w /= 2;
    }
    v[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulp_err(got: f32, want: f64) -> f64 {
        ((got as f64 - want) / want).abs()
    }

    #[test]
    fn exp_matches_f64_over_the_normal_range() {
        let mut worst = 0.0f64;
        let mut x = -87.3f32;
        while x < 88.7 {
            let e = ulp_err(exp(x), (x as f64).exp());
            worst = worst.max(e);
            x += 0.000_731;
        }
        // Also every value near 0 where softmax spends its time.
        for i in 0..100_000 {
            let x = -(i as f32) * 1e-4;
            worst = worst.max(ulp_err(exp(x), (x as f64).exp()));
        }
        assert!(worst < 2.5e-7, "max relative error {worst}");
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-87.0) > 0.0 && exp(-87.0).is_normal());
        assert!(exp(88.7).is_finite());
        // Gradual underflow: subnormal results within one subnormal step of libm's.
        let mut x = -103.9f32;
        while x < -87.0 {
            let want = (x as f64).exp();
            assert!(
                (exp(x) as f64 - want).abs() <= 1.5e-45_f64.max(want * 3e-7),
                "{x}"
            );
            x += 0.0137;
        }
    }

    #[test]
    fn reductions_match_f64() {
        let x: [f32; 1000] = core::array::from_fn(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013);
        let want: f64 = x.iter().map(|&v| v as f64).sum();
        assert!((sum(&x) - want).abs() < 1e-5);
        let want: f64 = x.iter().map(|&v| (v as f64 - 0.5).exp()).sum();
        assert!((sum_exp(&x, 0.5) - want).abs() / want < 1e-7);
        let mut y = [0.0f32; 1000];
        assert!((exp_to(&x, &mut y, 0.5) - want).abs() / want < 1e-7);
        let mut z = x;
        assert!((exp_in_place(&mut z, 0.5) - want).abs() / want < 1e-7);
        assert_eq!(y, z);
        assert_eq!(max(&x), x.iter().cloned().fold(f32::MIN, f32::max));
        let want: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
        assert!((dot(&x, &x) - want).abs() / want < 1e-7);
    }
}
