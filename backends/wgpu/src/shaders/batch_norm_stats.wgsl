// Training-mode batch statistics of one statistics group of [batch, channels, spatial], one
// workgroup per channel; the host dispatches the groups in order. Words: 0 channels,
// 1 spatial, 2 n = the group's values per channel (batch / groups * spatial), 3 eps,
// 4 1 - momentum, 5 momentum, 6 n / (n - 1), 7 1 when n > 1, 8 the group's first saved index
// (group * channels), 9 1 when the group moves the running statistics (0 leaves them untouched,
// bit for bit), 10 the first x element bound (of the group, or of the run); for the run kernels
// also 11 the run's values per channel, 12 1 on the group's first run, 13 1 on its last run.
//
// Two passes (mean, then squared deviations from it) rather than E[x^2] - mean^2, which
// cancels catastrophically in f32 when a channel's mean is large next to its spread. Each
// invocation sums a strided share with Kahan compensation before the tree reduction, so the
// f32 result stays within a few ulps of the f64 reference even for long channels.
//
// `bn_stats` takes the whole group at once. When the group is larger than one binding the host
// binds it in runs of whole images instead: `bn_run_sum` adds each run's channel sums into
// save_mean, then `bn_run_sqdev` adds each run's squared deviations from sum / n into
// save_invstd and, on the group's last run, turns both into the statistics.

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

// Channel c's statistics of the group; the running ones move only when the group moves them.
fn store_statistics(c: u32, mean: f32, variance: f32) {
    let i = pu(8u) + c;
    save_mean[i] = mean;
    save_invstd[i] = 1.0 / sqrt(variance + pf(3u));
    if (pu(9u) == 0u) { return; }
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
    let mean = channel_sum(t, c, pu(10u), n, 0.0, 1u) / nf;
    let variance = channel_sum(t, c, pu(10u), n, mean, 2u) / nf;
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
    let total = channel_sum(t, c, pu(10u), pu(11u), 0.0, 1u);
    let i = pu(8u) + c;
    if (t == 0u) { save_mean[i] = select(save_mean[i], 0.0, pu(12u) == 1u) + total; }
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
    let i = pu(8u) + c;
    // save_mean holds the channel's sum until the group's last run replaces it.
    let mean = save_mean[i] / nf;
    let total = channel_sum(t, c, pu(10u), pu(11u), mean, 2u);
    if (t == 0u) {
        let sum = select(save_invstd[i], 0.0, pu(12u) == 1u) + total;
        if (pu(13u) == 1u) {
            store_statistics(c, mean, sum / nf);
        } else {
            save_invstd[i] = sum;
        }
    }
}
