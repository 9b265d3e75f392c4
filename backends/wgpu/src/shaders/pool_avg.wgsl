// Global average pooling over [planes, spatial].
// gap_forward: one workgroup of 64 per plane, pu(0) = planes, pu(1) = spatial: Kahan-summed
// strided shares, then a tree reduction. gap_backward: one invocation per element,
// pu(0) = elements, pu(1) = spatial. Both read pu(2) = first src element, pu(3) = first dst
// element (the images may be a window of larger tensors).

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;

var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn gap_forward(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let p = wid.x + wid.y * nwg.x;
    if (p >= pu(0u)) { return; }
    let spatial = pu(1u);
    let base = pu(2u) + p * spatial;
    var s = 0.0;
    var comp = 0.0;
    for (var e = t; e < spatial; e = e + 64u) {
        let y = src[base + e] - comp;
        let u = s + y;
        comp = (u - s) - y;
        s = u;
    }
    partial[t] = s;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w = w / 2u) {
        if (t < w) { partial[t] = partial[t] + partial[t + w]; }
        workgroupBarrier();
    }
    if (t == 0u) { dst[pu(3u) + p] = partial[0] / f32(spatial); }
}

@compute @workgroup_size(256)
fn gap_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    if (e >= pu(0u)) { return; }
    let spatial = pu(1u);
    dst[pu(3u) + e] = src[pu(2u) + e / spatial] / f32(spatial);
}
