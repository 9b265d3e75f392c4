// Three-operand elementwise kernels: t0, t1 read, t2 written.

@group(0) @binding(0) var<storage, read> t0: array<f32>;
@group(0) @binding(1) var<storage, read> t1: array<f32>;
@group(0) @binding(2) var<storage, read_write> t2: array<f32>;

@compute @workgroup_size(256)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    if (e >= pu(0u)) { return; }
    t2[pu(3u) + e] = t0[pu(1u) + e] + t1[pu(2u) + e];
}

// grad_x = grad_y where y > 0, else 0.
@compute @workgroup_size(256)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    if (e >= pu(0u)) { return; }
    var g = 0.0;
    if (t0[pu(1u) + e] > 0.0) { g = t1[pu(2u) + e]; }
    t2[pu(3u) + e] = g;
}
