// y = (x - mean_c) * scale_c * gamma_c + beta_c over [batch, channels, spatial], one
// invocation per element: pu(0) = elements, pu(1) = channels, pu(2) = spatial, pu(3) = 1 when
// binding 4 holds a variance (inference: scale = 1 / sqrt(var + pf(4))), 0 when it holds the
// inverse standard deviation itself (training, after bn_stats); pu(5) = first x and y element
// (the images may be a window of larger tensors: x and y start at the same offset in theirs);
// pu(6) = index of channel 0's mean and spread (the images' statistics group * channels in
// training, 0 in inference).

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read> spread: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn bn_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    if (e >= pu(0u)) { return; }
    let c = (e / pu(2u)) % pu(1u);
    let s = pu(6u) + c;
    var scale = spread[s];
    if (pu(3u) == 1u) { scale = 1.0 / sqrt(scale + pf(4u)); }
    let i = pu(5u) + e;
    y[i] = (x[i] - mean[s]) * scale * gamma[c] + beta[c];
}
