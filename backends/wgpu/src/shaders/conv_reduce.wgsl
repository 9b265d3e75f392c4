// grad_weight[e] += the sum of the backward-filter slices' partials for e, in slice order, with
// Kahan compensation (the slices are few, so compensating is cheap).
//
// Words: 0 weight length, 1 slices.

@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad_weight: array<f32>;

@compute @workgroup_size(256)
fn conv2d_filter_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    let len = pu(0u);
    if (e >= len) { return; }
    var s = 0.0;
    var c = 0.0;
    for (var z = 0u; z < pu(1u); z = z + 1u) {
        let y = partials[z * len + e] - c;
        let u = s + y;
        c = (u - s) - y;
        s = u;
    }
    grad_weight[e] = grad_weight[e] + s;
}
