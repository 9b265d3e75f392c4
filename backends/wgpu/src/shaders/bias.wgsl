// The linear layer's bias: v0 is read (bias, or grad_out), v1 is updated (x, or grad_bias).

@group(0) @binding(0) var<storage, read> v0: array<f32>;
@group(0) @binding(1) var<storage, read_write> v1: array<f32>;

// x[r][c] += bias[c] over one chunk of whole rows, one row per workgroup row of the grid (no
// per-element division by cols). Words: 0 rows in the chunk, 1 offset of the chunk in x's
// window, 2 cols.
@compute @workgroup_size(256)
fn bias_add(@builtin(global_invocation_id) gid: vec3<u32>) {
    let cols = pu(2u);
    let col = gid.x;
    if (col >= cols || gid.y >= pu(0u)) { return; }
    let i = pu(1u) + gid.y * cols + col;
    v1[i] = v1[i] + v0[col];
}

var<workgroup> partial: array<f32, 256>;

// grad_bias[c] += sum_r grad_out[r][c]. A workgroup owns 256 / lanes adjacent columns; each of
// its `lanes` row lanes sums every lanes-th row with Kahan compensation (adjacent invocations
// read adjacent columns), then the lanes are added pairwise in workgroup memory.
// Words: 0 rows, 1 cols, 2 lanes (a power of two dividing 256).
@compute @workgroup_size(256)
fn bias_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let rows = pu(0u);
    let cols = pu(1u);
    let lanes = pu(2u);
    let width = 256u / lanes;
    let lane = t / width;
    let col = (wid.x + wid.y * nwg.x) * width + t % width;
    var s = 0.0;
    var comp = 0.0;
    if (col < cols) {
        for (var r = lane; r < rows; r = r + lanes) {
            let y = v0[r * cols + col] - comp;
            let u = s + y;
            comp = (u - s) - y;
            s = u;
        }
    }
    partial[t] = s;
    workgroupBarrier();
    for (var w = lanes / 2u; w > 0u; w = w / 2u) {
        if (lane < w) { partial[t] = partial[t] + partial[t + w * width]; }
        workgroupBarrier();
    }
    if (lane == 0u && col < cols) {
        v1[col] = v1[col] + partial[t];
    }
}
