// The per-channel sums of batch-norm backward, shared by the whole-batch kernel and the
// run-by-run one; the including module binds `x` and `dy`.

var<workgroup> part_dy: array<f32, 256>;
var<workgroup> part_dyx: array<f32, 256>;

// The workgroup totals (every invocation gets them) of dy and of dy * (x - mean) over the
// first `count` values of channel c, x and dy bound from element `first`: Kahan per
// invocation, then a tree.
fn grad_sums(t: u32, c: u32, first: u32, count: u32, mean: f32) -> vec2<f32> {
    var a = Kahan(0.0, 0.0);
    var b = Kahan(0.0, 0.0);
    for (var e = t; e < count; e = e + 256u) {
        let i = first + at(c, e);
        let g = dy[i];
        a = kahan_add(a, g);
        b = kahan_add(b, g * (x[i] - mean));
    }
    part_dy[t] = a.s;
    part_dyx[t] = b.s;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w = w / 2u) {
        if (t < w) {
            part_dy[t] = part_dy[t] + part_dy[t + w];
            part_dyx[t] = part_dyx[t] + part_dyx[t + w];
        }
        workgroupBarrier();
    }
    return vec2<f32>(part_dy[0], part_dyx[0]);
}
