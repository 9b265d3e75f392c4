// conv2d forward as an implicit GEMM: output[o][p] = sum_k weight[o][k] * im2col[k][p], with
// rows o = output channels, columns p = (n, oh, ow) and k = (c, kh, kw); im2col is never
// materialised, each invocation gathers its pixels' taps from the input.
//
// Words: 0 in_h, 1 in_w, 2 in_h*in_w, 3 out_w, 4 out_h*out_w, 5 kernel_w, 6 kernel_h,
// 7 stride, 8 padding, 9 K = in_c*kh*kw, 10 P = batch*out_h*out_w, 11 out_c, 12 column tiles,
// 13 in_c*in_h*in_w, 14 out_c*out_h*out_w, 15 first input element, 16 first output element
// (the images may be a window of larger tensors).
//
// Bindings (conv_tile.wgsl): gathered = input, staged = weight, result = output.

@compute @workgroup_size(THREADS)
fn conv2d_forward(id: ColumnTiled) {
    if (column_tile(id) >= pu(12u)) { return; }
    let m0 = first_row(id);
    let in_h = pu(0u);
    let in_w = pu(1u);
    let ohw_len = pu(4u);
    let stride = pu(7u);
    let pad = pu(8u);
    let k_len = pu(9u);
    let m_len = pu(11u);

    let p = my_columns(id);
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

    // The tap of reduction index k: (kh, kw) as (outer, inner).
    let kw_len = pu(5u);
    let kh_len = pu(6u);
    let plane = pu(2u);
    var tap = Tap(0u, 0u, 0u);
    for (var k0 = 0u; k0 < k_len; k0 = k0 + BK) {
        // Invocation t stages weight[m0 .. m0 + 16][k0 + t].
        let k = k0 + id.t;
        stage_rows(id.t, m0, m_len, k < k_len, k, k_len);
        workgroupBarrier();
        let kn = min(BK, k_len - k0);
        for (var kk = 0u; kk < kn; kk = kk + 1u) {
            let ok = p_ok & (ih0 + vec4<u32>(tap.outer) < vec4<u32>(in_h))
                & (iw0 + vec4<u32>(tap.inner) < vec4<u32>(in_w));
            step(kk, gather(ok, base + vec4<u32>(tap.chan + tap.outer * in_w + tap.inner)));
            tap = next_tap(tap, kw_len, kh_len, plane);
        }
        workgroupBarrier();
    }

    let out_base = vec4<u32>(pu(16u)) + n * vec4<u32>(pu(14u)) + ohw;
    store_tile(m0, m_len, ohw_len, false, p_ok, out_base);
}
