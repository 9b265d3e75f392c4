// conv2d forward as an implicit GEMM: output[o][p] = sum_k weight[o][k] * im2col[k][p], with
// rows o = output channels, columns p = (n, oh, ow) and k = (c, kh, kw); im2col is never
// materialised, each invocation gathers its pixels' taps from the input.
//
// Words: 0 in_h, 1 in_w, 2 in_h*in_w, 3 out_w, 4 out_h*out_w, 5 kernel_w, 6 kernel_h,
// 7 stride, 8 padding, 9 K = in_c*kh*kw, 10 P = batch*out_h*out_w, 11 out_c, 12 column tiles,
// 13 in_c*in_h*in_w, 14 out_c*out_h*out_w, 15 first input element, 16 first output element
// (the images may be a window of larger tensors).

@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;

fn store_row(m: u32, ok: vec4<bool>, base: vec4<u32>, v: vec4<f32>) {
    if (m >= pu(11u)) { return; }
    let at = base + vec4<u32>(m * pu(4u));
    if (ok.x) { output[at.x] = v.x; }
    if (ok.y) { output[at.y] = v.y; }
    if (ok.z) { output[at.z] = v.z; }
    if (ok.w) { output[at.w] = v.w; }
}

@compute @workgroup_size(THREADS)
fn conv2d_forward(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = column_tile(wid, nwg);
    if (tile >= pu(12u)) { return; }
    let m0 = wid.z * ROWS;
    let in_h = pu(0u);
    let in_w = pu(1u);
    let ohw_len = pu(4u);
    let stride = pu(7u);
    let pad = pu(8u);
    let k_len = pu(9u);
    let m_len = pu(11u);

    let p = my_columns(tile * COLS, t);
    let p_ok = p < vec4<u32>(pu(10u));
    let n = p / vec4<u32>(ohw_len);
    let ohw = p - n * vec4<u32>(ohw_len);
    let oh = ohw / vec4<u32>(pu(3u));
    let ow = ohw - oh * vec4<u32>(pu(3u));
    // Input row and column of tap (0, 0); one in the padding wraps to a huge u32, so a single
    // `<` per axis rejects both sides. `base` + the tap's offset is the input index when the
    // tap is inside (the wrapped terms cancel).
    let ih0 = oh * vec4<u32>(stride) - vec4<u32>(pad);
    let iw0 = ow * vec4<u32>(stride) - vec4<u32>(pad);
    let base = vec4<u32>(pu(15u)) + n * vec4<u32>(pu(13u)) + ih0 * vec4<u32>(in_w) + iw0;

    // The tap of reduction index k, advanced one index at a time (no division in the loop).
    let kw_len = pu(5u);
    let kh_len = pu(6u);
    let plane = pu(2u);
    var kh = 0u;
    var kw = 0u;
    var chan = 0u;
    for (var k0 = 0u; k0 < k_len; k0 = k0 + BK) {
        // Invocation t stages weight[m0 .. m0 + 16][k0 + t].
        let k = k0 + t;
        for (var q = 0u; q < 4u; q = q + 1u) {
            var v = vec4<f32>(0.0);
            let o = m0 + 4u * q;
            if (k < k_len) {
                if (o < m_len) { v.x = weight[o * k_len + k]; }
                if (o + 1u < m_len) { v.y = weight[(o + 1u) * k_len + k]; }
                if (o + 2u < m_len) { v.z = weight[(o + 2u) * k_len + k]; }
                if (o + 3u < m_len) { v.w = weight[(o + 3u) * k_len + k]; }
            }
            a_tile[t * 4u + q] = v;
        }
        workgroupBarrier();
        let kn = min(BK, k_len - k0);
        for (var kk = 0u; kk < kn; kk = kk + 1u) {
            let ok = p_ok & (ih0 + vec4<u32>(kh) < vec4<u32>(in_h))
                & (iw0 + vec4<u32>(kw) < vec4<u32>(in_w));
            let at = gather4(ok, base + vec4<u32>(chan + kh * in_w + kw));
            let x = vec4<f32>(input[at.x], input[at.y], input[at.z], input[at.w]);
            step(kk, select(vec4<f32>(0.0), x, ok));
            kw = kw + 1u;
            if (kw == kw_len) {
                kw = 0u;
                kh = kh + 1u;
                if (kh == kh_len) {
                    kh = 0u;
                    chan = chan + plane;
                }
            }
        }
        workgroupBarrier();
    }

    let out_base = vec4<u32>(pu(16u)) + n * vec4<u32>(pu(14u)) + ohw;
    // One call per register: a dynamic index into `acc` would put it in memory.
    store_row(m0 + 0u, p_ok, out_base, acc[0]);
    store_row(m0 + 1u, p_ok, out_base, acc[1]);
    store_row(m0 + 2u, p_ok, out_base, acc[2]);
    store_row(m0 + 3u, p_ok, out_base, acc[3]);
    store_row(m0 + 4u, p_ok, out_base, acc[4]);
    store_row(m0 + 5u, p_ok, out_base, acc[5]);
    store_row(m0 + 6u, p_ok, out_base, acc[6]);
    store_row(m0 + 7u, p_ok, out_base, acc[7]);
    store_row(m0 + 8u, p_ok, out_base, acc[8]);
    store_row(m0 + 9u, p_ok, out_base, acc[9]);
    store_row(m0 + 10u, p_ok, out_base, acc[10]);
    store_row(m0 + 11u, p_ok, out_base, acc[11]);
    store_row(m0 + 12u, p_ok, out_base, acc[12]);
    store_row(m0 + 13u, p_ok, out_base, acc[13]);
    store_row(m0 + 14u, p_ok, out_base, acc[14]);
    store_row(m0 + 15u, p_ok, out_base, acc[15]);
}
