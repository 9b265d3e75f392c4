// norms[r] = ||x_r||, y_r = x_r / norms[r]; pu(0) = rows, pu(1) = cols.
//
// The row is scaled by a power of two that brings its largest magnitude into [0.5, 1) before
// squaring, so neither huge nor subnormal rows over- or underflow in f32; scaling by a power
// of two is exact, and y is the scaled row over the scaled norm.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> norms: array<f32>;

// 2^j for -126 <= j <= 127, built from the bits.
fn pow2(j: i32) -> f32 { return bitcast<f32>(u32(j + 127) << 23u); }

// k such that m * 2^k lies in [0.5, 1) for a normal m, or in [1, 2^23) for a subnormal one;
// 0 for 0 and non-finite m.
fn scale_exponent(m: f32) -> i32 {
    let bits = bitcast<u32>(m);
    let e = i32((bits >> 23u) & 0xffu);
    if (bits == 0u || e == 255) { return 0; }
    if (e == 0) { return 149; }
    return 126 - e;
}

@compute @workgroup_size(256)
fn l2_normalize_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let rows = pu(0u);
    let cols = pu(1u);
    let row = row_of(wid, nwg);
    if (row >= rows) { return; }
    let base = matrix_base(row, cols);

    var m = 0.0;
    for (var c = t; c < cols; c = c + ROW_WG) { m = nan_max(m, abs_bits(x[base + c])); }
    m = reduce_max(t, m);

    // Two factors, each at most 2^75, so each is a normal f32.
    let k = scale_exponent(m);
    let f1 = pow2(k / 2);
    let f2 = pow2(k - k / 2);
    var acc = Kahan(0.0, 0.0);
    for (var c = t; c < cols; c = c + ROW_WG) {
        let v = (x[base + c] * f1) * f2;
        acc = kahan_add(acc, v * v);
    }
    let scaled = sqrt(reduce_sum(t, acc.s - acc.c));
    let norm = (scaled * pow2(-(k / 2))) * pow2(-(k - k / 2));

    var ok = false;
    if (!is_finite(m)) {
        if (t == 0u) {
            norms[row_slot(row)] = m;
            record_fault(FAULT_NON_FINITE, whole_row(row), 0u);
        }
    } else if (!is_finite(norm)) {
        if (t == 0u) {
            norms[row_slot(row)] = norm;
            record_fault(FAULT_NON_FINITE, whole_row(row), 0u);
        }
    } else if (norm < MIN_NORMAL) {
        if (t == 0u) {
            norms[row_slot(row)] = norm;
            record_fault(FAULT_ZERO_NORM_ROW, whole_row(row), 0u);
        }
    } else {
        if (t == 0u) { norms[row_slot(row)] = norm; }
        ok = true;
    }
    for (var c = t; c < cols; c = c + ROW_WG) {
        var v = 0.0;
        if (ok) { v = ((x[base + c] * f1) * f2) / scaled; }
        y[base + c] = v;
    }
}
