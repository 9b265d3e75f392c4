// Batch-norm backward, one workgroup per channel: pu(0) = channels, pu(1) = spatial,
// pu(2) = n = batch * spatial. Reduces sum(dy) and sum(dy * (x - mean)) (Kahan per invocation,
// then a tree), accumulates dgamma / dbeta, then writes dx for the channel.
//
// dx stays in the workgroup that owns the sums: a separate elementwise pass would need the
// raw sums in a scratch buffer, since dgamma / dbeta already hold the caller's earlier values.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> save_mean: array<f32>;
@group(0) @binding(4) var<storage, read> save_invstd: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(7) var<storage, read_write> dbeta: array<f32>;

var<workgroup> part_dy: array<f32, 256>;
var<workgroup> part_dyx: array<f32, 256>;

@compute @workgroup_size(256)
fn bn_backward(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= pu(0u)) { return; }
    let n = pu(2u);
    let mean = save_mean[c];
    let inv = save_invstd[c];

    var a = 0.0;
    var ca = 0.0;
    var b = 0.0;
    var cb = 0.0;
    for (var e = t; e < n; e = e + 256u) {
        let i = at(c, e);
        let g = dy[i];
        let ya = g - ca;
        let ua = a + ya;
        ca = (ua - a) - ya;
        a = ua;
        let yb = g * (x[i] - mean) - cb;
        let ub = b + yb;
        cb = (ub - b) - yb;
        b = ub;
    }
    part_dy[t] = a;
    part_dyx[t] = b;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w = w / 2u) {
        if (t < w) {
            part_dy[t] = part_dy[t] + part_dy[t + w];
            part_dyx[t] = part_dyx[t] + part_dyx[t + w];
        }
        workgroupBarrier();
    }
    let sum_dy = part_dy[0];
    let sum_dyx = part_dyx[0] * inv;
    if (t == 0u) {
        dgamma[c] = dgamma[c] + sum_dyx;
        dbeta[c] = dbeta[c] + sum_dy;
    }
    let nf = f32(n);
    let mean_dy = sum_dy / nf;
    let mean_dyx = sum_dyx / nf;
    let scale = gamma[c] * inv;
    for (var e = t; e < n; e = e + 256u) {
        let i = at(c, e);
        let xhat = (x[i] - mean) * inv;
        dx[i] = scale * (dy[i] - mean_dy - xhat * mean_dyx);
    }
}
