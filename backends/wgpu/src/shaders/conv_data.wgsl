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
//
// Bindings (conv_tile.wgsl): gathered = grad_output, staged = weight, result = grad_input.

@compute @workgroup_size(THREADS)
fn conv2d_backward_data(id: ColumnTiled) {
    if (column_tile(id) >= pu(13u)) { return; }
    let m0 = first_row(id);
    let out_h = pu(2u);
    let out_w = pu(3u);
    let ohw_len = pu(4u);
    let stride = pu(7u);
    let k_len = pu(10u);
    let m_len = pu(12u);

    let p = my_columns(id);
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

    // The step of reduction index k: (j, l) as (outer, inner).
    let nkw = pu(9u);
    let nkh = pu(25u);
    var tap = Tap(0u, 0u, 0u);
    for (var k0 = 0u; k0 < k_len; k0 = k0 + BK) {
        // Invocation t stages weight[o][m0 .. m0 + 16][kh0 + stride j][kw0 + stride l] for
        // k0 + t = (o, j, l).
        let k = k0 + id.t;
        let ko = k / pu(8u);
        let kr = k - ko * pu(8u);
        let kj = kr / pu(9u);
        let kl = kr - kj * pu(9u);
        let w_off = ko * pu(24u) + (pu(16u) + stride * kj) * pu(5u) + pu(17u) + stride * kl;
        stage_rows(id.t, m0, m_len, k < k_len, w_off, pu(6u));
        workgroupBarrier();
        let kn = min(BK, k_len - k0);
        for (var kk = 0u; kk < kn; kk = kk + 1u) {
            let ok = p_ok & (oh0 - vec4<u32>(tap.outer) < vec4<u32>(out_h))
                & (ow0 - vec4<u32>(tap.inner) < vec4<u32>(out_w));
            step(kk, gather(ok, base + vec4<u32>(tap.chan - tap.outer * out_w - tap.inner)));
            tap = next_tap(tap, nkw, nkh, ohw_len);
        }
        workgroupBarrier();
    }

    let in_base = vec4<u32>(pu(27u)) + n * vec4<u32>(pu(22u))
        + (vec4<u32>(pu(20u)) + vec4<u32>(stride) * i) * vec4<u32>(pu(0u))
        + vec4<u32>(pu(21u)) + vec4<u32>(stride) * ii;
    store_tile(m0, m_len, pu(1u), false, p_ok, in_base);
}
