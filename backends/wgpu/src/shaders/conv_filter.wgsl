// conv2d backward-filter as an implicit GEMM: grad_weight[o][k] += sum_q grad_output[o][q] *
// im2col[q][k], with rows o = output channels, columns k = (c, kh, kw) and the reduction over
// q = (n, oh, ow). The reduction is long and the output small, so the host may split q into
// slices: slice s sums q in [s * chunk, (s + 1) * chunk) and writes its partial tile to the
// workspace, and `conv2d_filter_reduce` adds the slices to grad_weight in a fixed order. With
// one slice the tile is added to grad_weight directly.
//
// A layer with few columns (16 channels of 3x3 taps: 144) would leave most of a 256-column
// tile idle, so a workgroup may instead run `groups` independent groups of 64 / groups
// invocations, each on 256 / groups columns and its own slice (z * groups + group): the same
// tile rows and columns, a different part of the reduction.
//
// Words: 0 in_h, 1 in_w, 2 in_h*in_w, 3 out_w, 4 out_h*out_w, 5 kernel_w, 6 kernel_h*kernel_w,
// 7 stride, 8 padding, 9 K = in_c*kh*kw, 10 Q = batch*out_h*out_w, 11 out_c, 12 chunk (a
// multiple of 64 / groups), 13 1 = add into the result (one slice), 0 = write the slice,
// 14 out_c * K, 15 in_c*in_h*in_w, 16 out_c*out_h*out_w, 17 out_h, 18 invocations per group
// (64 / groups), 19 first input element, 20 first grad_output element (the images may be a
// window of larger tensors).
//
// Bindings (conv_tile.wgsl): gathered = input, staged = grad_output, result = grad_weight with
// one slice, the workspace with more.

@compute @workgroup_size(THREADS)
fn conv2d_backward_filter(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let m0 = wid.y * ROWS;
    let in_h = pu(0u);
    let in_w = pu(1u);
    let out_w = pu(3u);
    let ohw_len = pu(4u);
    let stride = pu(7u);
    let pad = pu(8u);
    let k_len = pu(9u);
    let m_len = pu(11u);
    let width = pu(18u);
    let group = t / width;
    let lane = t - group * width;
    let slice = wid.z * (THREADS / width) + group;
    let q_begin = min(slice * pu(12u), pu(10u));
    let q_end = min(q_begin + pu(12u), pu(10u));

    let k = vec4<u32>(wid.x * 4u * width + lane)
        + vec4<u32>(0u, width, 2u * width, 3u * width);
    let k_ok = k < vec4<u32>(k_len);
    let c = k / vec4<u32>(pu(6u));
    let r = k - c * vec4<u32>(pu(6u));
    let kh = r / vec4<u32>(pu(5u));
    let kw = r - kh * vec4<u32>(pu(5u));
    let col_off = c * vec4<u32>(pu(2u)) + kh * vec4<u32>(in_w) + kw;

    // The output pixel of reduction index q, advanced one index at a time (no division in the
    // loop), as the input row and column of tap (0, 0): one in the padding wraps to a huge
    // u32, so a single `<` per axis rejects both sides, and the wrapped terms cancel in the
    // index when the tap is inside.
    let n_first = q_begin / ohw_len;
    let ohw_first = q_begin - n_first * ohw_len;
    var oh = ohw_first / out_w;
    var ow = ohw_first - oh * out_w;
    var ih0 = oh * stride - pad;
    var iw0 = ow * stride - pad;
    let image_len = pu(15u);
    let out_h = pu(17u);
    var image = pu(19u) + n_first * image_len;
    // Every group runs the same number of rounds (barriers need uniform control flow); a
    // group past its slice's end stages and adds nothing.
    for (var round = 0u; round < pu(12u); round = round + width) {
        let q0 = min(q_begin + round, q_end);
        // Invocation t stages grad_output[n][m0 .. m0 + 16][oh][ow] for q0 + lane = (n, oh, ow)
        // at reduction slot t = group * width + lane.
        let q = q0 + lane;
        let qn = q / ohw_len;
        let g_off = pu(20u) + qn * pu(16u) + (q - qn * ohw_len);
        stage_rows(t, m0, m_len, q < q_end, g_off, ohw_len);
        workgroupBarrier();
        let count = min(width, q_end - q0);
        for (var qq = group * width; qq < group * width + count; qq = qq + 1u) {
            let ok = k_ok & (vec4<u32>(ih0) + kh < vec4<u32>(in_h))
                & (vec4<u32>(iw0) + kw < vec4<u32>(in_w));
            step(qq, gather(ok, vec4<u32>(image + ih0 * in_w + iw0) + col_off));
            ow = ow + 1u;
            iw0 = iw0 + stride;
            if (ow == out_w) {
                ow = 0u;
                iw0 = 0u - pad;
                oh = oh + 1u;
                ih0 = ih0 + stride;
                if (oh == out_h) {
                    oh = 0u;
                    ih0 = 0u - pad;
                    image = image + image_len;
                }
            }
        }
        workgroupBarrier();
    }

    let w_base = vec4<u32>(slice * pu(14u)) + k;
    store_tile(m0, m_len, k_len, pu(13u) == 1u, k_ok, w_base);
}
