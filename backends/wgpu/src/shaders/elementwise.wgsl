// Elementwise kernels over one chunk: pu(0) = elements in the chunk, pu(1 + i) = offset of
// operand i inside its bound window, then the kernel's own words.

@group(0) @binding(0) var<storage, read_write> a0: array<f32>;

@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    if (e >= pu(0u)) { return; }
    a0[pu(1u) + e] = pf(2u);
}

@compute @workgroup_size(256)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    if (e >= pu(0u)) { return; }
    a0[pu(1u) + e] = a0[pu(1u) + e] * pf(2u);
}
