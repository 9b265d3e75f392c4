// Max pooling forward over NCHW planes, one invocation per output: pu(0) = outputs,
// pu(1) = in_height, pu(2) = in_width, pu(3) = out_height, pu(4) = out_width, pu(5) = kernel,
// pu(6) = stride, pu(7) = padding, pu(8) = first x element, pu(9) = first y / argmax element
// (the images may be a window of larger tensors), pu(10) = index of this run's first output in
// the whole tensor (faults name it). Padding is never selected (it counts as -inf), a strictly
// greater value replaces the running maximum (first maximum in row-major order wins) and a NaN
// always does (the last NaN wins, as PyTorch's CPU kernel).

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> argmax: array<u32>;

// By bits: a compiler may fold `v != v` away under fast-math assumptions.
fn is_nan_bits(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }

// The input range [lo, hi) that output coordinate `o` covers, padding cut off.
fn window(o: u32, size: u32) -> vec2<u32> {
    let first = o * pu(6u);
    let pad = pu(7u);
    let last = first + pu(5u);
    let lo = min(select(0u, first - pad, first > pad), size);
    let hi = min(select(0u, last - pad, last > pad), size);
    return vec2<u32>(lo, hi);
}

@compute @workgroup_size(256)
fn max_pool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = flat_index(gid, nwg, 256u);
    if (o >= pu(0u)) { return; }
    let in_h = pu(1u);
    let in_w = pu(2u);
    let out_h = pu(3u);
    let out_w = pu(4u);
    let ow = o % out_w;
    let rest = o / out_w;
    let oh = rest % out_h;
    let plane = rest / out_h;
    let rows = window(oh, in_h);
    let cols = window(ow, in_w);
    let base = plane * in_h * in_w;
    var best = bitcast<f32>(0xff800000u);
    var at = rows.x * in_w + cols.x;
    for (var h = rows.x; h < rows.y; h = h + 1u) {
        for (var w = cols.x; w < cols.y; w = w + 1u) {
            let i = h * in_w + w;
            let v = x[pu(8u) + base + i];
            if (is_nan_bits(v) || (!is_nan_bits(best) && v > best)) {
                best = v;
                at = i;
            }
        }
    }
    y[pu(9u) + o] = best;
    argmax[pu(9u) + o] = at;
    if (is_nan_bits(best)) { record_fault(FAULT_NON_FINITE, pu(10u) + o, 0u); }
}
