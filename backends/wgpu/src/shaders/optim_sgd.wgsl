// One torch.optim.SGD step per element (see SgdParams): weights w (pu(1)), grads g (pu(2)),
// velocity v (pu(3)) at their window offsets; pu(0) = elements in this chunk; pf(4) = lr,
// pf(5) = momentum, pf(6) = weight decay, pf(7) = 1 - dampening; pu(8) flags: bit 0 momentum
// in use, bit 1 first step, bit 2 Nesterov.

@group(0) @binding(0) var<storage, read_write> w: array<f32>;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(256)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    if (e >= pu(0u)) { return; }
    let flags = pu(8u);
    let wi = pu(1u) + e;
    let p = w[wi];
    let grad = g[pu(2u) + e] + pf(6u) * p;
    var dir = grad;
    if ((flags & 1u) != 0u) {
        let vi = pu(3u) + e;
        let mom = pf(5u);
        var nv = grad;
        // On the first step the velocity is not read: it may hold anything.
        if ((flags & 2u) == 0u) { nv = mom * v[vi] + pf(7u) * grad; }
        v[vi] = nv;
        dir = nv;
        if ((flags & 4u) != 0u) { dir = grad + mom * nv; }
    }
    w[wi] = p - pf(4u) * dir;
}
