// Training-mode batch statistics over [batch, channels, spatial], one workgroup per channel:
// pu(0) = channels, pu(1) = spatial, pu(2) = n = batch * spatial, pf(3) = eps,
// pf(4) = 1 - momentum, pf(5) = momentum, pf(6) = n / (n - 1), pu(7) = 1 when n > 1.
//
// Two passes (mean, then squared deviations from it) rather than E[x^2] - mean^2, which
// cancels catastrophically in f32 when a channel's mean is large next to its spread. Each
// invocation sums a strided share with Kahan compensation before the tree reduction, so the
// f32 result stays within a few ulps of the f64 reference even for long channels.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> save_mean: array<f32>;
@group(0) @binding(2) var<storage, read_write> save_invstd: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;

var<workgroup> partial: array<f32, 256>;

// Element e (< n) of channel c.
fn at(c: u32, e: u32) -> u32 {
    let s = pu(1u);
    let b = e / s;
    return (b * pu(0u) + c) * s + (e - b * s);
}

// Every invocation gets the workgroup total of `v`.
fn workgroup_sum(t: u32, v: f32) -> f32 {
    partial[t] = v;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w = w / 2u) {
        if (t < w) { partial[t] = partial[t] + partial[t + w]; }
        workgroupBarrier();
    }
    let total = partial[0];
    // partial is refilled by the next call.
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn bn_stats(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= pu(0u)) { return; }
    let n = pu(2u);
    let nf = f32(n);

    var s = 0.0;
    var comp = 0.0;
    for (var e = t; e < n; e = e + 256u) {
        let y = x[at(c, e)] - comp;
        let u = s + y;
        comp = (u - s) - y;
        s = u;
    }
    let mean = workgroup_sum(t, s) / nf;

    s = 0.0;
    comp = 0.0;
    for (var e = t; e < n; e = e + 256u) {
        let d = x[at(c, e)] - mean;
        let y = d * d - comp;
        let u = s + y;
        comp = (u - s) - y;
        s = u;
    }
    let variance = workgroup_sum(t, s) / nf;

    if (t == 0u) {
        save_mean[c] = mean;
        save_invstd[c] = 1.0 / sqrt(variance + pf(3u));
        running_mean[c] = pf(4u) * running_mean[c] + pf(5u) * mean;
        if (pu(7u) == 1u) {
            running_var[c] = pf(4u) * running_var[c] + pf(5u) * (variance * pf(6u));
        }
    }
}
