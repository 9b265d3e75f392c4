// What the optimiser kernels read (OptimArgs in ops/optim.rs): n elements; SGD's factors and
// flags (bit 0 = momentum in use, bit 1 = first step: the velocity is not read, it may hold
// anything; bit 2 = Nesterov); the EMA's momentum and 1 - momentum (formed in f64 on the host).
struct OptimArgs {
    size_t n;
    float lr, momentum, one_minus_momentum, weight_decay, one_minus_dampening;
    u32 flags;
};
ARGS_SIZE(OptimArgs);
ARGS_FIELD(OptimArgs, n);
ARGS_FIELD(OptimArgs, lr);
ARGS_FIELD(OptimArgs, momentum);
ARGS_FIELD(OptimArgs, one_minus_momentum);
ARGS_FIELD(OptimArgs, weight_decay);
ARGS_FIELD(OptimArgs, one_minus_dampening);
ARGS_FIELD(OptimArgs, flags);

// One torch.optim.SGD step per element (see SgdParams in dscl-core).
extern "C" __global__ void sgd_momentum(float* w, const float* g, float* v, OptimArgs args) {
    FOR_EACH(e, args.n) {
        float p = w[e];
        float grad = g[e] + args.weight_decay * p;
        float dir = grad;
        if (args.flags & 1u) {
            float nv = (args.flags & 2u) ? grad
                                         : args.momentum * v[e] + args.one_minus_dampening * grad;
            v[e] = nv;
            dir = (args.flags & 4u) ? grad + args.momentum * nv : nv;
        }
        w[e] = p - args.lr * dir;
    }
}

// target = momentum * target + (1 - momentum) * source
extern "C" __global__ void ema_update(const float* source, float* target, OptimArgs args) {
    FOR_EACH(e, args.n) {
        target[e] = args.momentum * target[e] + args.one_minus_momentum * source[e];
    }
}
