// Shared by the cross-entropies fused with their gradients (soft and hard targets), which write
// the gradient in place on the logits.
// pu(0) = rows, pu(1) = cols (row stride), pu(2) = valid columns, pf(3) = grad_scale.

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;

// The NaN-propagating maximum of the row's valid columns (valid >= 1). It starts from column 0
// rather than -inf, which WGSL has no literal for.
fn logits_max(t: u32, base: u32, valid: u32) -> f32 {
    var m = logits[base];
    for (var c = t; c < valid; c = c + ROW_WG) { m = nan_max(m, logits[base + c]); }
    return reduce_max(t, m);
}

// A row whose maximum or log-sum-exp is not finite has no finite loss: recorded as a fault.
fn check_finite_loss(row: u32, m: f32, log_sum_exp: f32) {
    if (!is_finite(m) || !is_finite(log_sum_exp)) {
        record_fault(FAULT_NON_FINITE, whole_row(row), 0u);
    }
}
