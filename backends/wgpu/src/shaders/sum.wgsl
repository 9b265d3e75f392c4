// out[pu(1)] = pf(2) * sum of x[pu(3) .. pu(3) + pu(0)], one workgroup: each invocation sums a
// strided share with Kahan compensation, then a tree reduction in workgroup memory. With
// pu(4) = 1 the result is added to out[pu(1)] instead: a vector larger than one binding is
// summed as runs, bound as windows.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn sum(@builtin(local_invocation_index) t: u32) {
    let n = pu(0u);
    var s = 0.0;
    var c = 0.0;
    for (var e = t; e < n; e = e + 256u) {
        let y = x[pu(3u) + e] - c;
        let u = s + y;
        c = (u - s) - y;
        s = u;
    }
    partial[t] = s;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w = w / 2u) {
        if (t < w) { partial[t] = partial[t] + partial[t + w]; }
        workgroupBarrier();
    }
    if (t == 0u) {
        let v = pf(2u) * partial[0];
        if (pu(4u) == 1u) { out[pu(1u)] = out[pu(1u)] + v; } else { out[pu(1u)] = v; }
    }
}
