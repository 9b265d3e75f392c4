// Max pooling backward as a gather, one invocation per input element (no float atomics):
// grad_x[i] = sum of grad_y[o] over the outputs o whose window covers i and whose argmax is i,
// in output order. pu(0) = inputs, then the forward's words: pu(1) = in_height,
// pu(2) = in_width, pu(3) = out_height, pu(4) = out_width, pu(5) = kernel, pu(6) = stride,
// pu(7) = padding; pu(8) = first grad_y / argmax element, pu(9) = first grad_x element (the
// images may be a window of larger tensors). The forward only ever stores an argmax inside the output's window; an
// argmax elsewhere (a corrupted buffer) is dropped.

@group(0) @binding(0) var<storage, read> grad_y: array<f32>;
@group(0) @binding(1) var<storage, read> argmax: array<u32>;
@group(0) @binding(2) var<storage, read_write> grad_x: array<f32>;

// The outputs [lo, hi) along one axis whose unclipped window
// [o * stride - padding, o * stride - padding + kernel) holds input coordinate `i`.
fn covering(i: u32, out_size: u32) -> vec2<u32> {
    let k = pu(5u);
    let stride = pu(6u);
    let p = i + pu(7u);
    let lo = select(0u, (p + 1u - k + stride - 1u) / stride, p + 1u > k);
    let hi = min(p / stride + 1u, out_size);
    return vec2<u32>(lo, max(lo, hi));
}

@compute @workgroup_size(256)
fn max_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    if (e >= pu(0u)) { return; }
    let in_h = pu(1u);
    let in_w = pu(2u);
    let out_h = pu(3u);
    let out_w = pu(4u);
    let w = e % in_w;
    let rest = e / in_w;
    let h = rest % in_h;
    let plane = rest / in_h;
    let target_index = h * in_w + w;
    let rows = covering(h, out_h);
    let cols = covering(w, out_w);
    var acc = 0.0;
    for (var oh = rows.x; oh < rows.y; oh = oh + 1u) {
        let row = pu(8u) + (plane * out_h + oh) * out_w;
        for (var ow = cols.x; ow < cols.y; ow = ow + 1u) {
            if (argmax[row + ow] == target_index) { acc = acc + grad_y[row + ow]; }
        }
    }
    grad_x[pu(9u) + e] = acc;
}
