// Batch normalisation over [batch, channels, spatial], one block per channel for the
// reductions (two passes, Kahan per thread, then a tree), one thread per element to apply.

// Element e (< batch * spatial) of channel c.
__device__ size_t bn_at(u32 c, size_t e, u32 channels, u32 spatial) {
    size_t b = e / spatial;
    return (b * channels + c) * spatial + (e - b * spatial);
}

// The block total of (x - center)^power (power 1 or 2) over channel c's n values.
__device__ float bn_channel_sum(const float* x, u32 c, size_t n, u32 channels, u32 spatial,
                                float center, int power, float* scratch) {
    Kahan k = {0.0f, 0.0f};
    for (size_t e = threadIdx.x; e < n; e += ROW_THREADS) {
        float d = x[bn_at(c, e, channels, spatial)] - center;
        if (power == 2) d = d * d;
        k = kahan_add(k, d);
    }
    return block_sum(k.s - k.c, scratch);
}

// Training statistics: save_mean, save_invstd = 1 / sqrt(var + eps) (biased variance), and the
// running statistics moved by momentum (unbiased variance; unchanged when n = 1).
extern "C" __global__ void bn_stats(
    const float* x, float* save_mean, float* save_invstd, float* running_mean, float* running_var,
    u32 channels, u32 spatial, size_t n, float eps, float keep, float momentum, float unbias) {
    __shared__ float scratch[ROW_THREADS];
    u32 c = blockIdx.x;
    if (c >= channels) return;
    float nf = (float)n;
    float mean = bn_channel_sum(x, c, n, channels, spatial, 0.0f, 1, scratch) / nf;
    float variance = bn_channel_sum(x, c, n, channels, spatial, mean, 2, scratch) / nf;
    if (threadIdx.x == 0) {
        save_mean[c] = mean;
        save_invstd[c] = 1.0f / sqrtf(variance + eps);
        running_mean[c] = keep * running_mean[c] + momentum * mean;
        if (n > 1) running_var[c] = keep * running_var[c] + momentum * (variance * unbias);
    }
}

// y = (x - mean_c) * scale_c * gamma_c + beta_c; scale is `spread` itself (the inverse standard
// deviation, training) or, with from_variance, 1 / sqrt(spread + eps) (inference).
extern "C" __global__ void bn_apply(
    const float* x, const float* gamma, const float* beta, const float* mean, const float* spread,
    float* y, size_t elements, u32 channels, u32 spatial, u32 from_variance, float eps) {
    FOR_EACH(e, elements) {
        u32 c = (u32)((e / spatial) % channels);
        float scale = from_variance ? 1.0f / sqrtf(spread[c] + eps) : spread[c];
        y[e] = (x[e] - mean[c]) * scale * gamma[c] + beta[c];
    }
}

// Backward of the training forward, one block per channel:
// dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), written;
// dgamma += sum(dy * xhat), dbeta += sum(dy).
extern "C" __global__ void bn_backward(
    const float* x, const float* dy, const float* gamma, const float* save_mean,
    const float* save_invstd, float* dx, float* dgamma, float* dbeta,
    u32 channels, u32 spatial, size_t n) {
    __shared__ float scratch[ROW_THREADS];
    u32 c = blockIdx.x;
    if (c >= channels) return;
    float mean = save_mean[c];
    float inv = save_invstd[c];
    Kahan a = {0.0f, 0.0f}, b = {0.0f, 0.0f};
    for (size_t e = threadIdx.x; e < n; e += ROW_THREADS) {
        size_t i = bn_at(c, e, channels, spatial);
        float g = dy[i];
        a = kahan_add(a, g);
        b = kahan_add(b, g * (x[i] - mean));
    }
    float sum_dy = block_sum(a.s - a.c, scratch);
    float sum_dyx = block_sum(b.s - b.c, scratch) * inv;
    if (threadIdx.x == 0) {
        dgamma[c] = dgamma[c] + sum_dyx;
        dbeta[c] = dbeta[c] + sum_dy;
    }
    float nf = (float)n;
    float mean_dy = sum_dy / nf;
    float mean_dyx = sum_dyx / nf;
    float scale = gamma[c] * inv;
    for (size_t e = threadIdx.x; e < n; e += ROW_THREADS) {
        size_t i = bn_at(c, e, channels, spatial);
        float xhat = (x[i] - mean) * inv;
        dx[i] = scale * (dy[i] - mean_dy - xhat * mean_dyx);
    }
}
