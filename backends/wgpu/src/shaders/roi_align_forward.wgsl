// ROI-align forward, one invocation per output (box, channel, bin): the mean over the bin's
// sampling grid of the bilinear samples (points off the map count as 0 but stay in the mean).
// A box with an invalid batch index outputs 0.

@group(0) @binding(0) var<storage, read> features: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;

@compute @workgroup_size(256)
fn roi_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i >= pu(0u)) { return; }
    let it = item(i);
    if (!it.here) { return; }
    let roi = it.roi;
    let out = pu(12u) + i;
    if (!roi.valid) {
        output[out] = 0.0;
        return;
    }
    let base = it.base;
    let pooled_w = pu(7u);
    let ph = it.bin / pooled_w;
    let pw = it.bin % pooled_w;
    var sum = 0.0;
    for (var iy = 0u; iy < roi.grid_h; iy = iy + 1u) {
        let y = sample_at(roi.start_h, roi.bin_h, ph, iy, roi.grid_h);
        for (var ix = 0u; ix < roi.grid_w; ix = ix + 1u) {
            let x = sample_at(roi.start_w, roi.bin_w, pw, ix, roi.grid_w);
            let s = taps(y, x);
            if (s.ok) {
                sum = sum + s.w.x * features[base + s.at.x];
                sum = sum + s.w.y * features[base + s.at.y];
                sum = sum + s.w.z * features[base + s.at.z];
                sum = sum + s.w.w * features[base + s.at.w];
            }
        }
    }
    output[out] = sum / roi.count;
}
