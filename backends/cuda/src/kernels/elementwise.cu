// Elementwise kernels: one thread per element in a grid-stride loop.

// What the elementwise kernels read (ElementwiseArgs in ops/elementwise.rs): n elements, or the
// bias kernels' [rows, cols] matrix; alpha is fill's value, scale's and axpy's factor and sum's
// scale.
struct ElementwiseArgs {
    size_t n, rows, cols;
    float alpha;
    u32 unused;
};
ARGS_SIZE(ElementwiseArgs);
ARGS_FIELD(ElementwiseArgs, n);
ARGS_FIELD(ElementwiseArgs, rows);
ARGS_FIELD(ElementwiseArgs, cols);
ARGS_FIELD(ElementwiseArgs, alpha);
ARGS_FIELD(ElementwiseArgs, unused);

extern "C" __global__ void fill_f32(float* x, ElementwiseArgs args) {
    FOR_EACH(e, args.n) x[e] = args.alpha;
}

extern "C" __global__ void copy_u32(const u32* src, u32* dst, ElementwiseArgs args) {
    FOR_EACH(e, args.n) dst[e] = src[e];
}

extern "C" __global__ void scale_f32(float* x, ElementwiseArgs args) {
    FOR_EACH(e, args.n) x[e] = x[e] * args.alpha;
}

// y += alpha * x
extern "C" __global__ void axpy_f32(const float* x, float* y, ElementwiseArgs args) {
    FOR_EACH(e, args.n) y[e] = y[e] + args.alpha * x[e];
}

extern "C" __global__ void add_f32(const float* a, const float* b, float* out,
                                   ElementwiseArgs args) {
    FOR_EACH(e, args.n) out[e] = a[e] + b[e];
}

// y = max(x, 0); a NaN passes through.
extern "C" __global__ void relu_forward(const float* x, float* y, ElementwiseArgs args) {
    FOR_EACH(e, args.n) {
        float v = x[e];
        y[e] = v < 0.0f ? 0.0f : v;
    }
}

// grad_x = grad_y where y > 0, else 0.
extern "C" __global__ void relu_backward(const float* y, const float* grad_y, float* grad_x,
                                         ElementwiseArgs args) {
    FOR_EACH(e, args.n) grad_x[e] = y[e] > 0.0f ? grad_y[e] : 0.0f;
}

// out[0] = alpha * sum of x[0 .. n), one block of ROW_THREADS: Kahan per thread, then a tree.
extern "C" __global__ void sum_f32(const float* x, float* out, ElementwiseArgs args) {
    __shared__ float scratch[ROW_THREADS];
    Kahan k = {0.0f, 0.0f};
    for (size_t e = threadIdx.x; e < args.n; e += ROW_THREADS) k = kahan_add(k, x[e]);
    float total = block_sum(k.s - k.c, scratch);
    if (threadIdx.x == 0) out[0] = args.alpha * total;
}

// x[r][c] += bias[c]
extern "C" __global__ void bias_add(float* x, const float* bias, ElementwiseArgs args) {
    FOR_EACH(e, args.rows * args.cols) x[e] = x[e] + bias[e % args.cols];
}

// grad_bias[c] += sum_r grad_out[r][c]: one thread per column, Kahan over the rows in order.
extern "C" __global__ void bias_backward(const float* grad_out, float* grad_bias,
                                         ElementwiseArgs args) {
    FOR_EACH(c, args.cols) {
        Kahan k = {0.0f, 0.0f};
        for (size_t r = 0; r < args.rows; ++r) k = kahan_add(k, grad_out[r * args.cols + c]);
        grad_bias[c] = grad_bias[c] + (k.s - k.c);
    }
}
