// SupCon / DSCL loss of a block of anchors fused with its gradient, in place on the logits.
// pu(0) = rows, pu(1) = row_offset, pu(2) = batch, pu(3) = cols (row stride), pu(4) = valid
// columns, pu(5) = 1 for DSCL weights, pf(6) = beta, pf(7) = grad_scale.
//
// Block row r is anchor i = row_offset + r; A(i) = valid columns except i. Three sweeps over
// the row: the maximum over A(i); the exponential sum and the positives' count and shifted
// logit sum (the augmented view apart, since DSCL weighs it differently); then the gradient.
// Exponentials are recomputed in the last sweep instead of stored, because every invocation
// reads the view's logit, which its owner would otherwise overwrite.

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;

@compute @workgroup_size(256)
fn contrastive_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let rows = pu(0u);
    let row_offset = pu(1u);
    let batch = pu(2u);
    let cols = pu(3u);
    let valid = pu(4u);
    let decoupled = pu(5u) != 0u;
    let beta = pf(6u);
    let grad_scale = pf(7u);
    let row = row_of(wid, nwg);
    if (row >= rows) { return; }
    let base = matrix_base(row, cols);
    let anchor = row_offset + row;
    let view = batch + anchor;
    let anchor_label = labels[anchor];
    // The host checked valid >= 2 * batch, so A(i) holds column 0 or 1, and the view.
    let s_view = logits[base + view];
    let view_pos = labels[view] == anchor_label;

    var m = logits[base + select(0u, 1u, anchor == 0u)];
    for (var j = t; j < valid; j = j + ROW_WG) {
        if (j != anchor) { m = nan_max(m, logits[base + j]); }
    }
    let m_raw = reduce_max(t, m);
    let shift = torch_shift(m_raw);

    var sum = Kahan(0.0, 0.0);
    var pos = Kahan(0.0, 0.0);
    var count = 0u;
    for (var j = t; j < valid; j = j + ROW_WG) {
        if (j != anchor) {
            let d = logits[base + j] - shift;
            sum = kahan_add(sum, exp(d));
            if (j != view && labels[j] == anchor_label) {
                pos = kahan_add(pos, d);
                count = count + 1u;
            }
        }
    }
    let total = reduce_sum(t, sum.s - sum.c);
    let pos_sum = reduce_sum(t, pos.s - pos.c);
    let others = reduce_sum_u(t, count);
    // The reads of this row are done everywhere before any invocation overwrites it.
    storageBarrier();

    let n_others = f32(others);
    var w_view = 0.0;
    if (view_pos) { w_view = 1.0; }
    var w_other = 1.0;
    var w_total = w_view + n_others;
    if (decoupled) {
        w_other = 0.0;
        if (others > 0u) { w_other = beta / n_others; }
        w_total = w_view;
        if (others > 0u) { w_total = w_view + beta; }
    }
    let weighted = w_view * (s_view - shift) + w_other * pos_sum;
    let log_sum = log(total);

    if (t == 0u) {
        if (!is_finite(m_raw) || !is_finite(shift + log_sum)) {
            record_fault(FAULT_NON_FINITE, anchor, 0u);
        }
        var l = 0.0;
        if (w_total > 0.0) { l = log_sum - weighted / w_total; }
        loss[anchor] = l;
    }

    // An anchor without positive weight gets a zero row.
    let live = w_total > 0.0;
    let inv_total = 1.0 / w_total;
    let g_other = grad_scale * w_other * inv_total;
    let g_view = grad_scale * w_view * inv_total;
    for (var j = t; j < cols; j = j + ROW_WG) {
        var g = 0.0;
        if (live && j < valid && j != anchor) {
            let p = exp(logits[base + j] - shift) / total;
            g = grad_scale * p;
            if (j == view) {
                g = g - g_view;
            } else if (labels[j] == anchor_label) {
                g = g - g_other;
            }
        }
        logits[base + j] = g;
    }
}
