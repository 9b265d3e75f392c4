// Softmax and log-sum-exp of each row over its first valid columns (the rest are never read).
// pu(0) = rows, pu(1) = cols (row stride), pu(2) = valid columns.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

// The NaN-propagating maximum of the valid columns (valid >= 1), and sum exp(x - shift) over
// them. The maximum starts from column 0 rather than -inf, which WGSL has no literal for.
fn row_max(t: u32, base: u32, valid: u32) -> f32 {
    var m = x[base];
    for (var c = t; c < valid; c = c + ROW_WG) { m = nan_max(m, x[base + c]); }
    return reduce_max(t, m);
}

fn row_sum_exp(t: u32, base: u32, valid: u32, shift: f32) -> f32 {
    var acc = Kahan(0.0, 0.0);
    for (var c = t; c < valid; c = c + ROW_WG) { acc = kahan_add(acc, exp(x[base + c] - shift)); }
    return reduce_sum(t, acc.s - acc.c);
}

// out = y: plain max subtraction, as torch.softmax (a row with an infinity comes out NaN);
// masked columns are 0.
@compute @workgroup_size(256)
fn row_softmax(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let rows = pu(0u);
    let cols = pu(1u);
    let valid = pu(2u);
    let row = row_of(wid, nwg);
    if (row >= rows) { return; }
    let base = matrix_base(row, cols);
    let m = row_max(t, base, valid);
    let s = row_sum_exp(t, base, valid, m);
    // With a finite maximum the sum lies in [1, valid], so the log-sum-exp is finite.
    if (t == 0u && !is_finite(m)) { record_fault(FAULT_NON_FINITE, whole_row(row), 0u); }
    for (var c = t; c < cols; c = c + ROW_WG) {
        var v = 0.0;
        if (c < valid) { v = exp(x[base + c] - m) / s; }
        out[base + c] = v;
    }
}

// out[r] = log sum exp over the valid columns, shifted as torch.logsumexp: a row of -inf gives
// -inf, a +inf entry +inf, a NaN NaN.
@compute @workgroup_size(256)
fn row_logsumexp(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let rows = pu(0u);
    let cols = pu(1u);
    let valid = pu(2u);
    let row = row_of(wid, nwg);
    if (row >= rows) { return; }
    let base = matrix_base(row, cols);
    let m = row_max(t, base, valid);
    let s = row_sum_exp(t, base, valid, torch_shift(m));
    if (t == 0u) {
        var lse = m;
        if (is_finite(m)) {
            lse = m + log(s);
        } else {
            record_fault(FAULT_NON_FINITE, whole_row(row), 0u);
        }
        out[row_slot(row)] = lse;
    }
}
