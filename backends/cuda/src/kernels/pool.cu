// Max pooling (PyTorch semantics: padding never selected, first maximum in row-major window
// order wins, a NaN in the window is selected and recorded) and global average pooling.

// The input range [lo, hi) that output coordinate o covers, padding cut off.
__device__ void pool_window(u32 o, u32 size, u32 kernel, u32 stride, u32 pad, u32* lo, u32* hi) {
    u32 first = o * stride;
    u32 last = first + kernel;
    *lo = min(first > pad ? first - pad : 0u, size);
    *hi = min(last > pad ? last - pad : 0u, size);
}

// One thread per output; argmax is the index h * in_w + w within the (image, channel) plane.
extern "C" __global__ void max_pool_forward(
    FaultSlot* fault, const float* x, float* y, u32* argmax, size_t outputs,
    u32 in_h, u32 in_w, u32 out_h, u32 out_w, u32 kernel, u32 stride, u32 pad) {
    FOR_EACH(o, outputs) {
        u32 ow = (u32)(o % out_w);
        size_t rest = o / out_w;
        u32 oh = (u32)(rest % out_h);
        size_t plane = rest / out_h;
        u32 r0, r1, c0, c1;
        pool_window(oh, in_h, kernel, stride, pad, &r0, &r1);
        pool_window(ow, in_w, kernel, stride, pad, &c0, &c1);
        const float* xp = x + plane * in_h * in_w;
        float best = __uint_as_float(0xff800000u);
        u32 at = r0 * in_w + c0;
        for (u32 h = r0; h < r1; ++h) {
            for (u32 w = c0; w < c1; ++w) {
                float v = xp[h * in_w + w];
                if (is_nan_bits(v) || (!is_nan_bits(best) && v > best)) {
                    best = v;
                    at = h * in_w + w;
                }
            }
        }
        y[o] = best;
        argmax[o] = at;
        if (is_nan_bits(best)) record_fault(fault, FAULT_NON_FINITE, (u32)o, 0u);
    }
}

// The outputs [lo, hi) along one axis whose unclipped window holds input coordinate i.
__device__ void covering(u32 i, u32 out_size, u32 kernel, u32 stride, u32 pad, u32* lo, u32* hi) {
    u32 p = i + pad;
    *lo = p + 1u > kernel ? (p + 1u - kernel + stride - 1u) / stride : 0u;
    *hi = max(*lo, min(p / stride + 1u, out_size));
}

// A gather, one thread per input element over the outputs whose windows cover it and whose
// argmax it is, in output order: no float atomics, a deterministic sum.
extern "C" __global__ void max_pool_backward(
    const float* grad_y, const u32* argmax, float* grad_x, size_t inputs,
    u32 in_h, u32 in_w, u32 out_h, u32 out_w, u32 kernel, u32 stride, u32 pad) {
    FOR_EACH(e, inputs) {
        u32 w = (u32)(e % in_w);
        size_t rest = e / in_w;
        u32 h = (u32)(rest % in_h);
        size_t plane = rest / in_h;
        u32 target = h * in_w + w;
        u32 r0, r1, c0, c1;
        covering(h, out_h, kernel, stride, pad, &r0, &r1);
        covering(w, out_w, kernel, stride, pad, &c0, &c1);
        float acc = 0.0f;
        for (u32 oh = r0; oh < r1; ++oh) {
            size_t row = (plane * out_h + oh) * out_w;
            for (u32 ow = c0; ow < c1; ++ow) {
                if (argmax[row + ow] == target) acc += grad_y[row + ow];
            }
        }
        grad_x[e] = acc;
    }
}

// y[p] = mean of x[p][..spatial], one block of ROW_THREADS per plane.
extern "C" __global__ void gap_forward(const float* x, float* y, size_t planes, u32 spatial) {
    __shared__ float scratch[ROW_THREADS];
    for (size_t p = blockIdx.x; p < planes; p += gridDim.x) {
        const float* xp = x + p * spatial;
        Kahan k = {0.0f, 0.0f};
        for (u32 e = threadIdx.x; e < spatial; e += ROW_THREADS) k = kahan_add(k, xp[e]);
        float total = block_sum(k.s - k.c, scratch);
        if (threadIdx.x == 0) y[p] = total / (float)spatial;
    }
}

// grad_x[p][s] = grad_y[p] / spatial
extern "C" __global__ void gap_backward(const float* grad_y, float* grad_x, size_t elements, u32 spatial) {
    FOR_EACH(e, elements) grad_x[e] = grad_y[e / spatial] / (float)spatial;
}
