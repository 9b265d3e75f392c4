// Batch-norm backward of one statistics group, one workgroup per channel (the host dispatches
// the groups in order, so dgamma / dbeta accumulate group by group): pu(0) = channels,
// pu(1) = spatial, pu(2) = n = batch / groups * spatial, pu(3) = the group's first x / dy / dx
// element (the three start at the same offset in their windows), pu(4) = the group's first
// saved index (group * channels). Reduces sum(dy) and sum(dy * (x - mean)) (Kahan per
// invocation, then a tree), accumulates dgamma / dbeta, then writes dx for the channel.
//
// dx stays in the workgroup that owns the sums: a separate elementwise pass would need the
// raw sums in a scratch buffer, since dgamma / dbeta already hold the caller's earlier values.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> save_mean: array<f32>;
@group(0) @binding(4) var<storage, read> save_invstd: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(7) var<storage, read_write> dbeta: array<f32>;

@compute @workgroup_size(256)
fn bn_backward(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= pu(0u)) { return; }
    let n = pu(2u);
    let first = pu(3u);
    let mean = save_mean[pu(4u) + c];
    let inv = save_invstd[pu(4u) + c];

    let sums = grad_sums(t, c, first, n, mean);
    let sum_dy = sums.x;
    let sum_dyx = sums.y * inv;
    if (t == 0u) {
        dgamma[c] = dgamma[c] + sum_dyx;
        dbeta[c] = dbeta[c] + sum_dy;
    }
    let nf = f32(n);
    let mean_dy = sum_dy / nf;
    let mean_dyx = sum_dyx / nf;
    let scale = gamma[c] * inv;
    for (var e = t; e < n; e = e + 256u) {
        let i = first + at(c, e);
        let xhat = (x[i] - mean) * inv;
        dx[i] = scale * (dy[i] - mean_dy - xhat * mean_dyx);
    }
}
