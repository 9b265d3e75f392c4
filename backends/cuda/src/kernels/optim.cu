// One torch.optim.SGD step per element (see SgdParams in dscl-core): flags bit 0 = momentum in
// use, bit 1 = first step (the velocity is not read: it may hold anything), bit 2 = Nesterov.
extern "C" __global__ void sgd_momentum(
    float* w, const float* g, float* v, size_t n,
    float lr, float momentum, float weight_decay, float one_minus_dampening, u32 flags) {
    FOR_EACH(e, n) {
        float p = w[e];
        float grad = g[e] + weight_decay * p;
        float dir = grad;
        if (flags & 1u) {
            float nv = (flags & 2u) ? grad : momentum * v[e] + one_minus_dampening * grad;
            v[e] = nv;
            dir = (flags & 4u) ? grad + momentum * nv : nv;
        }
        w[e] = p - lr * dir;
    }
}

// target = momentum * target + (1 - momentum) * source, with 1 - momentum formed in f64 on
// the host.
extern "C" __global__ void ema_update(const float* source, float* target, size_t n,
                                      float momentum, float one_minus_momentum) {
    FOR_EACH(e, n) target[e] = momentum * target[e] + one_minus_momentum * source[e];
}
