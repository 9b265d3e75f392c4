// Two-operand elementwise kernels: b0 read, b1 written (see elementwise.wgsl for the words).

@group(0) @binding(0) var<storage, read> b0: array<f32>;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;

@compute @workgroup_size(256)
fn copy_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    if (e >= pu(0u)) { return; }
    b1[pu(2u) + e] = b0[pu(1u) + e];
}

// y += alpha * x
@compute @workgroup_size(256)
fn axpy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    if (e >= pu(0u)) { return; }
    let i = pu(2u) + e;
    b1[i] = b1[i] + pf(3u) * b0[pu(1u) + e];
}

// y = max(x, 0); a NaN passes through.
@compute @workgroup_size(256)
fn relu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    if (e >= pu(0u)) { return; }
    let x = b0[pu(1u) + e];
    var y = x;
    if (x < 0.0) { y = 0.0; }
    b1[pu(2u) + e] = y;
}
