// Elementwise kernels: one thread per element in a grid-stride loop.

extern "C" __global__ void fill_f32(float* x, size_t n, float value) {
    FOR_EACH(e, n) x[e] = value;
}

extern "C" __global__ void copy_u32(const u32* src, u32* dst, size_t n) {
    FOR_EACH(e, n) dst[e] = src[e];
}

extern "C" __global__ void scale_f32(float* x, size_t n, float alpha) {
    FOR_EACH(e, n) x[e] = x[e] * alpha;
}

// y += alpha * x
extern "C" __global__ void axpy_f32(const float* x, float* y, size_t n, float alpha) {
    FOR_EACH(e, n) y[e] = y[e] + alpha * x[e];
}

extern "C" __global__ void add_f32(const float* a, const float* b, float* out, size_t n) {
    FOR_EACH(e, n) out[e] = a[e] + b[e];
}

// y = max(x, 0); a NaN passes through.
extern "C" __global__ void relu_forward(const float* x, float* y, size_t n) {
    FOR_EACH(e, n) {
        float v = x[e];
        y[e] = v < 0.0f ? 0.0f : v;
    }
}

// grad_x = grad_y where y > 0, else 0.
extern "C" __global__ void relu_backward(const float* y, const float* grad_y, float* grad_x, size_t n) {
    FOR_EACH(e, n) grad_x[e] = y[e] > 0.0f ? grad_y[e] : 0.0f;
}

// out[0] = scale * sum of x[0 .. n), one block of ROW_THREADS: Kahan per thread, then a tree.
extern "C" __global__ void sum_f32(const float* x, size_t n, float scale, float* out) {
    __shared__ float scratch[ROW_THREADS];
    Kahan k = {0.0f, 0.0f};
    for (size_t e = threadIdx.x; e < n; e += ROW_THREADS) k = kahan_add(k, x[e]);
    float total = block_sum(k.s - k.c, scratch);
    if (threadIdx.x == 0) out[0] = scale * total;
}

// x[r][c] += bias[c]
extern "C" __global__ void bias_add(float* x, const float* bias, size_t rows, size_t cols) {
    FOR_EACH(e, rows * cols) x[e] = x[e] + bias[e % cols];
}

// grad_bias[c] += sum_r grad_out[r][c]: one thread per column, Kahan over the rows in order.
extern "C" __global__ void bias_backward(const float* grad_out, float* grad_bias, size_t rows, size_t cols) {
    FOR_EACH(c, cols) {
        Kahan k = {0.0f, 0.0f};
        for (size_t r = 0; r < rows; ++r) k = kahan_add(k, grad_out[r * cols + c]);
        grad_bias[c] = grad_bias[c] + (k.s - k.c);
    }
}
