// target = momentum * target + (1 - momentum) * source: source at pu(1), target at pu(2) in
// their windows, pu(0) = elements in this chunk, pf(3) = momentum, pf(4) = 1 - momentum
// (formed in f64 on the host).

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn ema(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    if (e >= pu(0u)) { return; }
    let i = pu(2u) + e;
    dst[i] = pf(3u) * dst[i] + pf(4u) * src[pu(1u) + e];
}
