// Training-mode batch statistics over [batch, channels, spatial], one workgroup per channel.
// Words: 0 channels, 1 spatial, 2 n = batch * spatial, 3 eps, 4 1 - momentum, 5 momentum,
// 6 n / (n - 1), 7 1 when n > 1; for the run kernels also 8 the run's values per channel,
// 9 the run's first x element, 10 1 on the first run, 11 1 on the last run.
//
// Two passes (mean, then squared deviations from it) rather than E[x^2] - mean^2, which
// cancels catastrophically in f32 when a channel's mean is large next to its spread. Each
// invocation sums a strided share with Kahan compensation before the tree reduction, so the
// f32 result stays within a few ulps of the f64 reference even for long channels.
//
// `bn_stats` takes the whole batch at once. When x is larger than one binding the host binds it
// in runs of whole images instead: `bn_run_sum` adds each run's channel sums into save_mean,
// then `bn_run_sqdev` adds each run's squared deviations from sum / n into save_invstd and, on
// the last run, turns both into the statistics.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> save_mean: array<f32>;
@group(0) @binding(2) var<storage, read_write> save_invstd: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;

var<workgroup> partial: array<f32, 256>;

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

// The workgroup total of (x - center)^power (power 1 or 2) over the first `count` values of
// channel c, x bound from element `first`.
fn channel_sum(t: u32, c: u32, first: u32, count: u32, center: f32, power: u32) -> f32 {
    var sum = Kahan(0.0, 0.0);
    for (var e = t; e < count; e = e + 256u) {
        var d = x[first + at(c, e)] - center;
        if (power == 2u) { d = d * d; }
        sum = kahan_add(sum, d);
    }
    return workgroup_sum(t, sum.s);
}

fn store_statistics(c: u32, mean: f32, variance: f32) {
    save_mean[c] = mean;
    save_invstd[c] = 1.0 / sqrt(variance + pf(3u));
    running_mean[c] = pf(4u) * running_mean[c] + pf(5u) * mean;
    if (pu(7u) == 1u) {
        running_var[c] = pf(4u) * running_var[c] + pf(5u) * (variance * pf(6u));
    }
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
    let mean = channel_sum(t, c, 0u, n, 0.0, 1u) / nf;
    let variance = channel_sum(t, c, 0u, n, mean, 2u) / nf;
    if (t == 0u) { store_statistics(c, mean, variance); }
}

@compute @workgroup_size(256)
fn bn_run_sum(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= pu(0u)) { return; }
    let total = channel_sum(t, c, pu(9u), pu(8u), 0.0, 1u);
    if (t == 0u) { save_mean[c] = select(save_mean[c], 0.0, pu(10u) == 1u) + total; }
}

@compute @workgroup_size(256)
fn bn_run_sqdev(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= pu(0u)) { return; }
    let nf = f32(pu(2u));
    // save_mean holds the channel's sum until the last run replaces it.
    let mean = save_mean[c] / nf;
    let total = channel_sum(t, c, pu(9u), pu(8u), mean, 2u);
    if (t == 0u) {
        let sum = select(save_invstd[c], 0.0, pu(10u) == 1u) + total;
        if (pu(11u) == 1u) {
            store_statistics(c, mean, sum / nf);
        } else {
            save_invstd[c] = sum;
        }
    }
}
