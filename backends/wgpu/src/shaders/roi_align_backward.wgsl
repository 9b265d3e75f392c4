// ROI-align backward, one invocation per output (box, channel, bin): scatters
// grad_output / count times each bilinear weight onto grad_features (accumulating).
//
// Bins of one box, and different boxes, share taps, so invocations collide. WGSL has no float
// atomics: each add is a compare-and-swap loop on the f32 bits. That keeps the work parallel
// over every (box, channel, bin) whatever the boxes' overlap; the price is that the order of
// the additions onto one element (and so its last bits) varies between runs.

@group(0) @binding(0) var<storage, read> grad_output: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad_features: array<atomic<u32>>;

fn add_f32(i: u32, v: f32) {
    var old = atomicLoad(&grad_features[i]);
    loop {
        let r = atomicCompareExchangeWeak(&grad_features[i], old, bitcast<u32>(bitcast<f32>(old) + v));
        if (r.exchanged) { return; }
        old = r.old_value;
    }
}

@compute @workgroup_size(256)
fn roi_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i >= pu(0u)) { return; }
    let it = item(i);
    let roi = it.roi;
    if (!roi.valid || !it.here) { return; }
    let share = grad_output[pu(12u) + i] / roi.count;
    let base = it.base;
    let pooled_w = pu(7u);
    let ph = it.bin / pooled_w;
    let pw = it.bin % pooled_w;
    for (var iy = 0u; iy < roi.grid_h; iy = iy + 1u) {
        let y = sample_at(roi.start_h, roi.bin_h, ph, iy, roi.grid_h);
        for (var ix = 0u; ix < roi.grid_w; ix = ix + 1u) {
            let x = sample_at(roi.start_w, roi.bin_w, pw, ix, roi.grid_w);
            let s = taps(y, x);
            if (s.ok) {
                // A zero contribution (a collapsed tap) changes nothing: skip its atomic.
                for (var k = 0u; k < 4u; k = k + 1u) {
                    let v = share * s.w[k];
                    if (v != 0.0) { add_f32(base + s.at[k], v); }
                }
            }
        }
    }
}
