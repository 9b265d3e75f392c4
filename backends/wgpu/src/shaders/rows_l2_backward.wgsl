// grad_x_r = (grad_y_r - y_r (y_r . grad_y_r)) / norms[r], 0 for a row the forward could not
// normalise; pu(0) = rows, pu(1) = cols.

@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> norms: array<f32>;
@group(0) @binding(2) var<storage, read> gy: array<f32>;
@group(0) @binding(3) var<storage, read_write> gx: array<f32>;

@compute @workgroup_size(256)
fn l2_normalize_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let rows = pu(0u);
    let cols = pu(1u);
    let row = row_of(wid, nwg);
    if (row >= rows) { return; }
    let base = matrix_base(row, cols);

    var acc = Kahan(0.0, 0.0);
    for (var c = t; c < cols; c = c + ROW_WG) { acc = kahan_add(acc, y[base + c] * gy[base + c]); }
    let dot = reduce_sum(t, acc.s - acc.c);

    let norm = norms[row_slot(row)];
    let ok = is_finite(norm) && norm >= MIN_NORMAL;
    for (var c = t; c < cols; c = c + ROW_WG) {
        var v = 0.0;
        if (ok) { v = (gy[base + c] - y[base + c] * dot) / norm; }
        gx[base + c] = v;
    }
}
