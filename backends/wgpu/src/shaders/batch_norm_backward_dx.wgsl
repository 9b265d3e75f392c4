// Batch-norm backward's dx for one run of whole images of a statistics group, one invocation
// per element, from the channel totals `bn_backward_run_sums` left in `sums`:
// dx = gamma * invstd * (dy - sum(dy) / n - xhat * invstd * sum(dy * (x - mean)) / n).
//
// Words: 0 channels, 1 spatial, 2 n = batch / groups * spatial, 3 the run's elements, 4 the
// run's first x / dy / dx element, 5 the group's first saved index (group * channels).

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> save_mean: array<f32>;
@group(0) @binding(4) var<storage, read> save_invstd: array<f32>;
@group(0) @binding(5) var<storage, read> sums: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn bn_backward_run_dx(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    if (e >= pu(3u)) { return; }
    let channels = pu(0u);
    let c = (e / pu(1u)) % channels;
    let i = pu(4u) + e;
    let nf = f32(pu(2u));
    let inv = save_invstd[pu(5u) + c];
    let mean_dy = sums[c] / nf;
    let mean_dyx = sums[channels + c] * inv / nf;
    let xhat = (x[i] - save_mean[pu(5u) + c]) * inv;
    dx[i] = gamma[c] * inv * (dy[i] - mean_dy - xhat * mean_dyx);
}
