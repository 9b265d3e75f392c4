// conv2d backward-data for one stride phase as an implicit GEMM. The host splits the input
// pixels into the stride * stride phases (ih % stride, iw % stride) = (ph, pw); in one phase
// only the taps kh = kh0 + stride * j, kw = kw0 + stride * l reach an output pixel, so no work
// is spent on the taps a strided convolution skips. Then
// grad_input[c][p] = sum_k weight^T[c][k] * gathered[k][p], with rows c = input channels,
// columns p = (n, i, ii) for the input pixel (ph + stride * i, pw + stride * ii), and
// k = (o, j, l), which reads grad_output[n][o][dh + i - j][dw + ii - l].
//
// Words: 0 in_w, 1 in_h*in_w, 2 out_h, 3 out_w, 4 out_h*out_w, 5 kernel_w,
// 6 kernel_h*kernel_w, 7 stride, 8 taps per channel in this phase (nkh * nkw), 9 nkw,
// 10 K = out_c * nkh * nkw, 11 P = batch * phase rows * phase columns, 12 in_c,
// 13 column tiles, 14 phase columns, 15 phase rows * phase columns, 16 kh0, 17 kw0, 18 dh,
// 19 dw, 20 ph, 21 pw, 22 in_c*in_h*in_w, 23 out_c*out_h*out_w, 24 in_c*kernel_h*kernel_w,
// 25 nkh, 26 first grad_output element, 27 first grad_input element (the images may be a
// window of larger tensors).

@group(0) @binding(0) var<storage, read> grad_output: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad_input: array<f32>;

fn store_row(c: u32, ok: vec4<bool>, base: vec4<u32>, v: vec4<f32>) {
    if (c >= pu(12u)) { return; }
    let at = base + vec4<u32>(c * pu(1u));
    if (ok.x) { grad_input[at.x] = v.x; }
    if (ok.y) { grad_input[at.y] = v.y; }
    if (ok.z) { grad_input[at.z] = v.z; }
    if (ok.w) { grad_input[at.w] = v.w; }
}

@compute @workgroup_size(THREADS)
fn conv2d_backward_data(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = column_tile(wid, nwg);
    if (tile >= pu(13u)) { return; }
    let m0 = wid.z * ROWS;
    let out_h = pu(2u);
    let out_w = pu(3u);
    let ohw_len = pu(4u);
    let stride = pu(7u);
    let k_len = pu(10u);
    let m_len = pu(12u);

    let p = my_columns(tile * COLS, t);
    let p_ok = p < vec4<u32>(pu(11u));
    let n = p / vec4<u32>(pu(15u));
    let r = p - n * vec4<u32>(pu(15u));
    let i = r / vec4<u32>(pu(14u));
    let ii = r - i * vec4<u32>(pu(14u));
    // Output row and column read through tap step (0, 0); step (j, l) reads (oh0 - j,
    // ow0 - l), which wraps to a huge u32 below zero, so one `<` per axis rejects both ends.
    // `base` + the step's offset is the grad_output index when the read is inside.
    let oh0 = vec4<u32>(pu(18u)) + i;
    let ow0 = vec4<u32>(pu(19u)) + ii;
    let base = vec4<u32>(pu(26u)) + n * vec4<u32>(pu(23u)) + oh0 * vec4<u32>(out_w) + ow0;

    // The step of reduction index k, advanced one index at a time (no division in the loop).
    let nkw = pu(9u);
    let nkh = pu(25u);
    var j = 0u;
    var l = 0u;
    var chan = 0u;
    for (var k0 = 0u; k0 < k_len; k0 = k0 + BK) {
        // Invocation t stages weight[o][m0 .. m0 + 16][kh0 + stride j][kw0 + stride l] for
        // k0 + t = (o, j, l).
        let k = k0 + t;
        let ko = k / pu(8u);
        let kr = k - ko * pu(8u);
        let kj = kr / pu(9u);
        let kl = kr - kj * pu(9u);
        let w_off = ko * pu(24u) + (pu(16u) + stride * kj) * pu(5u) + pu(17u) + stride * kl;
        let khw = pu(6u);
        for (var q = 0u; q < 4u; q = q + 1u) {
            var v = vec4<f32>(0.0);
            let c = m0 + 4u * q;
            if (k < k_len) {
                if (c < m_len) { v.x = weight[w_off + c * khw]; }
                if (c + 1u < m_len) { v.y = weight[w_off + (c + 1u) * khw]; }
                if (c + 2u < m_len) { v.z = weight[w_off + (c + 2u) * khw]; }
                if (c + 3u < m_len) { v.w = weight[w_off + (c + 3u) * khw]; }
            }
            a_tile[t * 4u + q] = v;
        }
        workgroupBarrier();
        let kn = min(BK, k_len - k0);
        for (var kk = 0u; kk < kn; kk = kk + 1u) {
            let ok = p_ok & (oh0 - vec4<u32>(j) < vec4<u32>(out_h))
                & (ow0 - vec4<u32>(l) < vec4<u32>(out_w));
            let at = gather4(ok, base + vec4<u32>(chan - j * out_w - l));
            let g = vec4<f32>(grad_output[at.x], grad_output[at.y], grad_output[at.z],
                grad_output[at.w]);
            step(kk, select(vec4<f32>(0.0), g, ok));
            l = l + 1u;
            if (l == nkw) {
                l = 0u;
                j = j + 1u;
                if (j == nkh) {
                    j = 0u;
                    chan = chan + ohw_len;
                }
            }
        }
        workgroupBarrier();
    }

    let in_base = vec4<u32>(pu(27u)) + n * vec4<u32>(pu(22u))
        + (vec4<u32>(pu(20u)) + vec4<u32>(stride) * i) * vec4<u32>(pu(0u))
        + vec4<u32>(pu(21u)) + vec4<u32>(stride) * ii;
    // One call per register: a dynamic index into `acc` would put it in memory.
    store_row(m0 + 0u, p_ok, in_base, acc[0]);
    store_row(m0 + 1u, p_ok, in_base, acc[1]);
    store_row(m0 + 2u, p_ok, in_base, acc[2]);
    store_row(m0 + 3u, p_ok, in_base, acc[3]);
    store_row(m0 + 4u, p_ok, in_base, acc[4]);
    store_row(m0 + 5u, p_ok, in_base, acc[5]);
    store_row(m0 + 6u, p_ok, in_base, acc[6]);
    store_row(m0 + 7u, p_ok, in_base, acc[7]);
    store_row(m0 + 8u, p_ok, in_base, acc[8]);
    store_row(m0 + 9u, p_ok, in_base, acc[9]);
    store_row(m0 + 10u, p_ok, in_base, acc[10]);
    store_row(m0 + 11u, p_ok, in_base, acc[11]);
    store_row(m0 + 12u, p_ok, in_base, acc[12]);
    store_row(m0 + 13u, p_ok, in_base, acc[13]);
    store_row(m0 + 14u, p_ok, in_base, acc[14]);
    store_row(m0 + 15u, p_ok, in_base, acc[15]);
}
