// Batch normalisation over [batch, channels, spatial]: the reductions run one block per
// (group, channel) in the forward and per channel in the backward (two passes, Kahan per
// thread, then a tree), the elementwise pass one thread per element.
//
// Statistics groups (BatchNormShape::groups): the batch is `groups` consecutive blocks of
// batch / groups items, each normalised by its own statistics as if it were a separate call.
// Group g's data starts at g * n * channels (n = batch / groups * spatial, the values of one
// channel in one group); its saved statistics are at g * channels + c (group-major). With one
// group every offset below is 0 and the kernels compute exactly what they did before groups.

// What the batch-norm kernels read (BatchNormArgs in ops/batch_norm.rs): n values of one
// channel in one group, the groups and which of them move the running statistics, the elements
// and group length of bn_apply, the shape, and the factors formed in f64 on the host.
struct BatchNormArgs {
    size_t n, groups, running_every, elements, group_len;
    u32 channels, spatial, from_variance;
    float eps, keep, momentum, unbias;
    u32 unused;
};
ARGS_SIZE(BatchNormArgs);
ARGS_FIELD(BatchNormArgs, n);
ARGS_FIELD(BatchNormArgs, groups);
ARGS_FIELD(BatchNormArgs, running_every);
ARGS_FIELD(BatchNormArgs, elements);
ARGS_FIELD(BatchNormArgs, group_len);
ARGS_FIELD(BatchNormArgs, channels);
ARGS_FIELD(BatchNormArgs, spatial);
ARGS_FIELD(BatchNormArgs, from_variance);
ARGS_FIELD(BatchNormArgs, eps);
ARGS_FIELD(BatchNormArgs, keep);
ARGS_FIELD(BatchNormArgs, momentum);
ARGS_FIELD(BatchNormArgs, unbias);
ARGS_FIELD(BatchNormArgs, unused);

// Element e (< n, the values of one channel in one group) of channel c, from the group's start.
__device__ size_t bn_at(u32 c, size_t e, u32 channels, u32 spatial) {
    size_t b = e / spatial;
    return (b * channels + c) * spatial + (e - b * spatial);
}

// The block total of (x - center)^power (power 1 or 2) over channel c's n values of the group
// starting at x.
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

// Training statistics of one (group, channel) per block, launched as exactly groups * channels
// blocks; block i is group i / channels, channel i % channels, and i is also where the group's
// statistics are saved. Writes save_mean and the biased variance, the latter into save_invstd:
// bn_finish, next on the stream, turns it into the inverse standard deviation after moving the
// running statistics with it. The running statistics cannot be moved here, because the groups
// of one channel run in different blocks in no set order and the moving groups must apply
// their updates in group order.
extern "C" __global__ void bn_stats(
    const float* x, float* save_mean, float* save_invstd, BatchNormArgs args) {
    __shared__ float scratch[ROW_THREADS];
    u32 i = blockIdx.x;
    u32 c = i % args.channels;
    const float* xg = x + (size_t)(i / args.channels) * args.n * args.channels;
    float nf = (float)args.n;
    float mean =
        bn_channel_sum(xg, c, args.n, args.channels, args.spatial, 0.0f, 1, scratch) / nf;
    float variance =
        bn_channel_sum(xg, c, args.n, args.channels, args.spatial, mean, 2, scratch) / nf;
    if (threadIdx.x == 0) {
        save_mean[i] = mean;
        save_invstd[i] = variance;
    }
}

// After bn_stats, one thread per channel: walks the groups in order; the groups g with
// g % running_every == 0 move the running statistics by momentum (unbiased variance; the
// variance is left unchanged when n = 1), the others leave them untouched, bit for bit, even
// when their statistics are NaN. Every group's variance becomes 1 / sqrt(var + eps).
extern "C" __global__ void bn_finish(
    const float* save_mean, float* save_invstd, float* running_mean, float* running_var,
    BatchNormArgs args) {
    FOR_EACH(c, args.channels) {
        for (size_t g = 0; g < args.groups; ++g) {
            size_t i = g * args.channels + c;
            float mean = save_mean[i];
            float variance = save_invstd[i];
            if (g % args.running_every == 0) {
                running_mean[c] = args.keep * running_mean[c] + args.momentum * mean;
                if (args.n > 1) {
                    running_var[c] =
                        args.keep * running_var[c] + args.momentum * (variance * args.unbias);
                }
            }
            save_invstd[i] = 1.0f / sqrtf(variance + args.eps);
        }
    }
}

// y = (x - mean) * scale * gamma_c + beta_c with the statistics of element e's group and
// channel (mean[g * channels + c]); group_len is the elements of one group, so passing the
// whole length makes every element group 0. scale is `spread` itself (the inverse standard
// deviation, training) or, with from_variance, 1 / sqrt(spread + eps) (inference, on the
// running statistics, which serve every group alike).
extern "C" __global__ void bn_apply(
    const float* x, const float* gamma, const float* beta, const float* mean, const float* spread,
    float* y, BatchNormArgs args) {
    FOR_EACH(e, args.elements) {
        u32 c = (u32)((e / args.spatial) % args.channels);
        size_t i = (e / args.group_len) * args.channels + c;
        float scale = args.from_variance ? 1.0f / sqrtf(spread[i] + args.eps) : spread[i];
        y[e] = (x[e] - mean[i]) * scale * gamma[c] + beta[c];
    }
}

// Backward of the training forward, one block per channel, its groups in order, each with its
// own saved statistics:
// dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), written;
// dgamma += sum(dy * xhat), dbeta += sum(dy), group after group.
// The groups of a channel share a block (rather than a block each, as in bn_stats) because
// their dgamma and dbeta terms must be added in group order: one thread adds them all.
extern "C" __global__ void bn_backward(
    const float* x, const float* dy, const float* gamma, const float* save_mean,
    const float* save_invstd, float* dx, float* dgamma, float* dbeta, BatchNormArgs args) {
    __shared__ float scratch[ROW_THREADS];
    u32 c = blockIdx.x;
    if (c >= args.channels) return;
    float nf = (float)args.n;
    for (size_t g = 0; g < args.groups; ++g) {
        size_t start = g * args.n * args.channels;
        const float* xg = x + start;
        const float* dyg = dy + start;
        float* dxg = dx + start;
        float mean = save_mean[g * args.channels + c];
        float inv = save_invstd[g * args.channels + c];
        Kahan a = {0.0f, 0.0f}, b = {0.0f, 0.0f};
        for (size_t e = threadIdx.x; e < args.n; e += ROW_THREADS) {
            size_t i = bn_at(c, e, args.channels, args.spatial);
            float d = dyg[i];
            a = kahan_add(a, d);
            b = kahan_add(b, d * (xg[i] - mean));
        }
        float sum_dy = block_sum(a.s - a.c, scratch);
        float sum_dyx = block_sum(b.s - b.c, scratch) * inv;
        if (threadIdx.x == 0) {
            dgamma[c] = dgamma[c] + sum_dyx;
            dbeta[c] = dbeta[c] + sum_dy;
        }
        float mean_dy = sum_dy / nf;
        float mean_dyx = sum_dyx / nf;
        float scale = gamma[c] * inv;
        for (size_t e = threadIdx.x; e < args.n; e += ROW_THREADS) {
            size_t i = bn_at(c, e, args.channels, args.spatial);
            float xhat = (xg[i] - mean) * inv;
            dxg[i] = scale * (dyg[i] - mean_dy - xhat * mean_dyx);
        }
    }
}
