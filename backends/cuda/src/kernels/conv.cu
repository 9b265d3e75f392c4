// conv2d (NCHW, weights [out_c, in_c, kh, kw], square stride and padding on both axes) as
// direct kernels: one thread per output element, summing its taps in (c, kh, kw) order.
// Correct first: the fast path is to be cuDNN or implicit-GEMM tiles, measured against these.

// The shape, as every conv kernel takes it (ConvArgs in ops/conv.rs). Indices within one plane
// and the steps through the padding are 32-bit (the host checks they fit), plane offsets 64-bit.
struct ConvArgs {
    u32 batch, in_c, in_h, in_w, out_c, kernel_h, kernel_w, stride, pad, out_h, out_w;
};
ARGS_SIZE(ConvArgs);
ARGS_FIELD(ConvArgs, batch);
ARGS_FIELD(ConvArgs, in_c);
ARGS_FIELD(ConvArgs, in_h);
ARGS_FIELD(ConvArgs, in_w);
ARGS_FIELD(ConvArgs, out_c);
ARGS_FIELD(ConvArgs, kernel_h);
ARGS_FIELD(ConvArgs, kernel_w);
ARGS_FIELD(ConvArgs, stride);
ARGS_FIELD(ConvArgs, pad);
ARGS_FIELD(ConvArgs, out_h);
ARGS_FIELD(ConvArgs, out_w);

// output[n][o][oh][ow] = sum over (c, kh, kw) of weight[o][c][kh][kw] * input[n][c][ih][iw]
extern "C" __global__ void conv2d_forward(const float* input, const float* weight, float* output,
                                          ConvArgs args) {
    FOR_EACH(i, (size_t)args.batch * args.out_c * args.out_h * args.out_w) {
        u32 ow = (u32)(i % args.out_w);
        size_t r = i / args.out_w;
        u32 oh = (u32)(r % args.out_h);
        r /= args.out_h;
        u32 o = (u32)(r % args.out_c);
        size_t n = r / args.out_c;
        float acc = 0.0f;
        for (u32 c = 0; c < args.in_c; ++c) {
            const float* x = input + (n * args.in_c + c) * args.in_h * args.in_w;
            const float* w = weight + ((size_t)o * args.in_c + c) * args.kernel_h * args.kernel_w;
            for (u32 kh = 0; kh < args.kernel_h; ++kh) {
                // Rows in the padding wrap to huge values and fail the bound check.
                u32 ih = oh * args.stride + kh - args.pad;
                if (ih >= args.in_h) continue;
                for (u32 kw = 0; kw < args.kernel_w; ++kw) {
                    u32 iw = ow * args.stride + kw - args.pad;
                    if (iw >= args.in_w) continue;
                    acc += w[kh * args.kernel_w + kw] * x[ih * args.in_w + iw];
                }
            }
        }
        output[i] = acc;
    }
}

// grad_input[n][c][ih][iw] = sum over (o, kh, kw) with (ih + pad - kh) a multiple of the stride
// of weight[o][c][kh][kw] * grad_output[n][o][oh][ow], written.
extern "C" __global__ void conv2d_backward_data(const float* grad_output, const float* weight,
                                                float* grad_input, ConvArgs args) {
    FOR_EACH(i, (size_t)args.batch * args.in_c * args.in_h * args.in_w) {
        u32 iw = (u32)(i % args.in_w);
        size_t r = i / args.in_w;
        u32 ih = (u32)(r % args.in_h);
        r /= args.in_h;
        u32 c = (u32)(r % args.in_c);
        size_t n = r / args.in_c;
        float acc = 0.0f;
        for (u32 o = 0; o < args.out_c; ++o) {
            const float* g = grad_output + (n * args.out_c + o) * args.out_h * args.out_w;
            const float* w = weight + ((size_t)o * args.in_c + c) * args.kernel_h * args.kernel_w;
            for (u32 kh = 0; kh < args.kernel_h; ++kh) {
                u32 th = ih + args.pad;
                if (th < kh || (th - kh) % args.stride != 0u) continue;
                u32 oh = (th - kh) / args.stride;
                if (oh >= args.out_h) continue;
                for (u32 kw = 0; kw < args.kernel_w; ++kw) {
                    u32 tw = iw + args.pad;
                    if (tw < kw || (tw - kw) % args.stride != 0u) continue;
                    u32 ow = (tw - kw) / args.stride;
                    if (ow >= args.out_w) continue;
                    acc += w[kh * args.kernel_w + kw] * g[oh * args.out_w + ow];
                }
            }
        }
        grad_input[i] = acc;
    }
}

// grad_weight[o][c][kh][kw] += sum over (n, oh, ow) of grad_output[n][o][oh][ow] *
// input[n][c][ih][iw]: one thread per weight, Kahan over the long reduction.
extern "C" __global__ void conv2d_backward_filter(const float* input, const float* grad_output,
                                                  float* grad_weight, ConvArgs args) {
    FOR_EACH(i, (size_t)args.out_c * args.in_c * args.kernel_h * args.kernel_w) {
        u32 kw = (u32)(i % args.kernel_w);
        size_t r = i / args.kernel_w;
        u32 kh = (u32)(r % args.kernel_h);
        r /= args.kernel_h;
        u32 c = (u32)(r % args.in_c);
        u32 o = (u32)(r / args.in_c);
        Kahan acc = {0.0f, 0.0f};
        for (size_t n = 0; n < args.batch; ++n) {
            const float* x = input + (n * args.in_c + c) * args.in_h * args.in_w;
            const float* g = grad_output + (n * args.out_c + o) * args.out_h * args.out_w;
            for (u32 oh = 0; oh < args.out_h; ++oh) {
                u32 ih = oh * args.stride + kh - args.pad;
                if (ih >= args.in_h) continue;
                for (u32 ow = 0; ow < args.out_w; ++ow) {
                    u32 iw = ow * args.stride + kw - args.pad;
                    if (iw >= args.in_w) continue;
                    acc = kahan_add(acc, g[oh * args.out_w + ow] * x[ih * args.in_w + iw]);
                }
            }
        }
        grad_weight[i] = grad_weight[i] + (acc.s - acc.c);
    }
}
