// Max pooling (PyTorch semantics: padding never selected, first maximum in row-major window
// order wins, a NaN in the window is selected and recorded) and global average pooling.

// What the pool kernels read (PoolArgs in ops/pool.rs): n outputs (max_pool_forward), inputs
// (max_pool_backward), planes (gap_forward) or elements (gap_backward); the max pool's geometry;
// the global average pool's values per plane.
struct PoolArgs {
    size_t n;
    u32 in_h, in_w, out_h, out_w, kernel, stride, pad, spatial;
};
ARGS_SIZE(PoolArgs);
ARGS_FIELD(PoolArgs, n);
ARGS_FIELD(PoolArgs, in_h);
ARGS_FIELD(PoolArgs, in_w);
ARGS_FIELD(PoolArgs, out_h);
ARGS_FIELD(PoolArgs, out_w);
ARGS_FIELD(PoolArgs, kernel);
ARGS_FIELD(PoolArgs, stride);
ARGS_FIELD(PoolArgs, pad);
ARGS_FIELD(PoolArgs, spatial);

// The input range [lo, hi) that output coordinate o covers, padding cut off.
__device__ void pool_window(u32 o, u32 size, u32 kernel, u32 stride, u32 pad, u32* lo, u32* hi) {
    u32 first = o * stride;
    u32 last = first + kernel;
    *lo = min(first > pad ? first - pad : 0u, size);
    *hi = min(last > pad ? last - pad : 0u, size);
}

// One thread per output; argmax is the index h * in_w + w within the (image, channel) plane.
extern "C" __global__ void max_pool_forward(
    FaultSlot* fault, const float* x, float* y, u32* argmax, PoolArgs args) {
    FOR_EACH(o, args.n) {
        u32 ow = (u32)(o % args.out_w);
        size_t rest = o / args.out_w;
        u32 oh = (u32)(rest % args.out_h);
        size_t plane = rest / args.out_h;
        u32 r0, r1, c0, c1;
        pool_window(oh, args.in_h, args.kernel, args.stride, args.pad, &r0, &r1);
        pool_window(ow, args.in_w, args.kernel, args.stride, args.pad, &c0, &c1);
        const float* xp = x + plane * args.in_h * args.in_w;
        float best = __uint_as_float(0xff800000u);
        u32 at = r0 * args.in_w + c0;
        for (u32 h = r0; h < r1; ++h) {
            for (u32 w = c0; w < c1; ++w) {
                float v = xp[h * args.in_w + w];
                if (is_nan_bits(v) || (!is_nan_bits(best) && v > best)) {
                    best = v;
                    at = h * args.in_w + w;
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
    const float* grad_y, const u32* argmax, float* grad_x, PoolArgs args) {
    FOR_EACH(e, args.n) {
        u32 w = (u32)(e % args.in_w);
        size_t rest = e / args.in_w;
        u32 h = (u32)(rest % args.in_h);
        size_t plane = rest / args.in_h;
        u32 target = h * args.in_w + w;
        u32 r0, r1, c0, c1;
        covering(h, args.out_h, args.kernel, args.stride, args.pad, &r0, &r1);
        covering(w, args.out_w, args.kernel, args.stride, args.pad, &c0, &c1);
        float acc = 0.0f;
        for (u32 oh = r0; oh < r1; ++oh) {
            size_t row = (plane * args.out_h + oh) * args.out_w;
            for (u32 ow = c0; ow < c1; ++ow) {
                if (argmax[row + ow] == target) acc += grad_y[row + ow];
            }
        }
        grad_x[e] = acc;
    }
}

// y[p] = mean of x[p][..spatial], one block of ROW_THREADS per plane.
extern "C" __global__ void gap_forward(const float* x, float* y, PoolArgs args) {
    __shared__ float scratch[ROW_THREADS];
    for (size_t p = blockIdx.x; p < args.n; p += gridDim.x) {
        const float* xp = x + p * args.spatial;
        Kahan k = {0.0f, 0.0f};
        for (u32 e = threadIdx.x; e < args.spatial; e += ROW_THREADS) k = kahan_add(k, xp[e]);
        float total = block_sum(k.s - k.c, scratch);
        if (threadIdx.x == 0) y[p] = total / (float)args.spatial;
    }
}

// grad_x[p][s] = grad_y[p] / spatial
extern "C" __global__ void gap_backward(const float* grad_y, float* grad_x, PoolArgs args) {
    FOR_EACH(e, args.n) grad_x[e] = grad_y[e / args.spatial] / (float)args.spatial;
}
