// Batch-norm backward when a statistics group is larger than one binding: the host binds x, dy
// and dx in runs of the group's whole images, group after group. `bn_backward_run_sums` adds
// each run's sum(dy) and sum(dy * (x - mean)) per channel into `sums` ([channels] then
// [channels]) and, on the group's last run, accumulates dgamma and dbeta;
// `bn_backward_run_dx` then writes the group's dx one run at a time from those totals.
//
// Words: 0 channels, 1 spatial, 2 n = batch / groups * spatial, 3 the run's values per
// channel, 4 the run's first x / dy / dx element (the three start at the same offset in their
// windows), 5 1 on the group's first run, 6 1 on its last run, 7 the group's first saved index
// (group * channels).

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> save_mean: array<f32>;
@group(0) @binding(3) var<storage, read> save_invstd: array<f32>;
@group(0) @binding(4) var<storage, read_write> sums: array<f32>;
@group(0) @binding(5) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(6) var<storage, read_write> dbeta: array<f32>;

@compute @workgroup_size(256)
fn bn_backward_run_sums(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = wid.x + wid.y * nwg.x;
    let channels = pu(0u);
    if (c >= channels) { return; }
    let mean = save_mean[pu(7u) + c];
    let run = grad_sums(t, c, pu(4u), pu(3u), mean);
    if (t == 0u) {
        let restart = pu(5u) == 1u;
        let sum_dy = select(sums[c], 0.0, restart) + run.x;
        let sum_dyx = select(sums[channels + c], 0.0, restart) + run.y;
        sums[c] = sum_dy;
        sums[channels + c] = sum_dyx;
        if (pu(6u) == 1u) {
            dgamma[c] = dgamma[c] + sum_dyx * save_invstd[pu(7u) + c];
            dbeta[c] = dbeta[c] + sum_dy;
        }
    }
}
