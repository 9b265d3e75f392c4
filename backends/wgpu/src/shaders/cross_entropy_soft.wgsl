// Soft-target cross-entropy (words and shared bindings in cross_entropy_common.wgsl).
// With shift m, e_c = exp(x_c - m), S = sum e, T = sum t, D = sum t (x - m):
// loss = T log S - D, gradient = grad_scale (e T / S - t).

@group(0) @binding(1) var<storage, read> targets: array<f32>;

@compute @workgroup_size(256)
fn soft_cross_entropy(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let rows = pu(0u);
    let cols = pu(1u);
    let valid = pu(2u);
    let grad_scale = pf(3u);
    let row = row_of(wid, nwg);
    if (row >= rows) { return; }
    let base = matrix_base(row, cols);

    let m_raw = logits_max(t, base, valid);
    let shift = torch_shift(m_raw);

    var se = Kahan(0.0, 0.0);
    var st = Kahan(0.0, 0.0);
    var sd = Kahan(0.0, 0.0);
    for (var c = t; c < valid; c = c + ROW_WG) {
        let d = logits[base + c] - shift;
        let tc = targets[base + c];
        se = kahan_add(se, exp(d));
        st = kahan_add(st, tc);
        sd = kahan_add(sd, tc * d);
    }
    let s = reduce_sum(t, se.s - se.c);
    let tsum = reduce_sum(t, st.s - st.c);
    let dsum = reduce_sum(t, sd.s - sd.c);
    let log_sum = log(s);
    if (t == 0u) {
        check_finite_loss(row, m_raw, shift + log_sum);
        loss[row_slot(row)] = tsum * log_sum - dsum;
    }

    // Each invocation rewrites only the columns it read.
    let a = tsum / s;
    for (var c = t; c < cols; c = c + ROW_WG) {
        var g = 0.0;
        if (c < valid) {
            let e = exp(logits[base + c] - shift);
            g = grad_scale * (e * a - targets[base + c]);
        }
        logits[base + c] = g;
    }
}
