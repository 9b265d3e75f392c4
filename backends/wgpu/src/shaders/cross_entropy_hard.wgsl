// Hard-label softmax cross-entropy (words and shared bindings in cross_entropy_common.wgsl).
// loss = log sum exp(x) - x[label]; gradient = grad_scale (softmax(x) - onehot(label)).
// A label >= valid is recorded as LabelOutOfRange (row, label), and that row's loss and
// gradient are 0 (its logits are not checked for non-finite values, as in the reference).

@group(0) @binding(1) var<storage, read> labels: array<u32>;

@compute @workgroup_size(256)
fn softmax_cross_entropy(
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
    let label = labels[row_slot(row)];
    let in_range = label < valid;
    var x_label = 0.0;
    if (in_range) { x_label = logits[base + label]; }

    let m_raw = logits_max(t, base, valid);
    let shift = torch_shift(m_raw);
    var se = Kahan(0.0, 0.0);
    for (var c = t; c < valid; c = c + ROW_WG) { se = kahan_add(se, exp(logits[base + c] - shift)); }
    let s = reduce_sum(t, se.s - se.c);
    let log_sum = log(s);
    // Every invocation has read the label's logit before its owner overwrites it.
    storageBarrier();

    if (t == 0u) {
        var l = 0.0;
        if (!in_range) {
            record_fault(FAULT_LABEL_OUT_OF_RANGE, whole_row(row), label);
        } else {
            check_finite_loss(row, m_raw, shift + log_sum);
            l = log_sum - (x_label - shift);
        }
        loss[row_slot(row)] = l;
    }

    for (var c = t; c < cols; c = c + ROW_WG) {
        var g = 0.0;
        if (in_range && c < valid) {
            g = grad_scale * (exp(logits[base + c] - shift) / s);
            if (c == label) { g = g - grad_scale; }
        }
        logits[base + c] = g;
    }
}
