// conv2d (NCHW, weights [out_c, in_c, kh, kw], square stride and padding on both axes) as
// direct kernels: one thread per output element, summing its taps in (c, kh, kw) order.
// Correct first: the fast path is to be cuDNN or implicit-GEMM tiles, measured against these.

#define CONV_SHAPE_PARAMS \
    u32 batch, u32 in_c, u32 in_h, u32 in_w, u32 out_c, u32 kernel_h, u32 kernel_w, \
    u32 stride, u32 pad, u32 out_h, u32 out_w

// output[n][o][oh][ow] = sum over (c, kh, kw) of weight[o][c][kh][kw] * input[n][c][ih][iw]
extern "C" __global__ void conv2d_forward(const float* input, const float* weight, float* output,
                                          CONV_SHAPE_PARAMS) {
    FOR_EACH(i, (size_t)batch * out_c * out_h * out_w) {
        u32 ow = (u32)(i % out_w);
        size_t r = i / out_w;
        u32 oh = (u32)(r % out_h);
        r /= out_h;
        u32 o = (u32)(r % out_c);
        size_t n = r / out_c;
        float acc = 0.0f;
        for (u32 c = 0; c < in_c; ++c) {
            const float* x = input + (n * in_c + c) * in_h * in_w;
            const float* w = weight + ((size_t)o * in_c + c) * kernel_h * kernel_w;
            for (u32 kh = 0; kh < kernel_h; ++kh) {
                // Rows in the padding wrap to huge values and fail the bound check.
                u32 ih = oh * stride + kh - pad;
                if (ih >= in_h) continue;
                for (u32 kw = 0; kw < kernel_w; ++kw) {
                    u32 iw = ow * stride + kw - pad;
                    if (iw >= in_w) continue;
                    acc += w[kh * kernel_w + kw] * x[ih * in_w + iw];
                }
            }
        }
        output[i] = acc;
    }
}

// grad_input[n][c][ih][iw] = sum over (o, kh, kw) with (ih + pad - kh) a multiple of the stride
// of weight[o][c][kh][kw] * grad_output[n][o][oh][ow], written.
extern "C" __global__ void conv2d_backward_data(const float* grad_output, const float* weight,
                                                float* grad_input, CONV_SHAPE_PARAMS) {
    FOR_EACH(i, (size_t)batch * in_c * in_h * in_w) {
        u32 iw = (u32)(i % in_w);
        size_t r = i / in_w;
        u32 ih = (u32)(r % in_h);
        r /= in_h;
        u32 c = (u32)(r % in_c);
        size_t n = r / in_c;
        float acc = 0.0f;
        for (u32 o = 0; o < out_c; ++o) {
            const float* g = grad_output + (n * out_c + o) * out_h * out_w;
            const float* w = weight + ((size_t)o * in_c + c) * kernel_h * kernel_w;
            for (u32 kh = 0; kh < kernel_h; ++kh) {
                u32 th = ih + pad;
                if (th < kh || (th - kh) % stride != 0u) continue;
                u32 oh = (th - kh) / stride;
                if (oh >= out_h) continue;
                for (u32 kw = 0; kw < kernel_w; ++kw) {
                    u32 tw = iw + pad;
                    if (tw < kw || (tw - kw) % stride != 0u) continue;
                    u32 ow = (tw - kw) / stride;
                    if (ow >= out_w) continue;
                    acc += w[kh * kernel_w + kw] * g[oh * out_w + ow];
                }
            }
        }
        grad_input[i] = acc;
    }
}

// grad_weight[o][c][kh][kw] += sum over (n, oh, ow) of grad_output[n][o][oh][ow] *
// input[n][c][ih][iw]: one thread per weight, Kahan over the long reduction.
extern "C" __global__ void conv2d_backward_filter(const float* input, const float* grad_output,
                                                  float* grad_weight, CONV_SHAPE_PARAMS) {
    FOR_EACH(i, (size_t)out_c * in_c * kernel_h * kernel_w) {
        u32 kw = (u32)(i % kernel_w);
        size_t r = i / kernel_w;
        u32 kh = (u32)(r % kernel_h);
        r /= kernel_h;
        u32 c = (u32)(r % in_c);
        u32 o = (u32)(r / in_c);
        Kahan acc = {0.0f, 0.0f};
        for (size_t n = 0; n < batch; ++n) {
            const float* x = input + (n * in_c + c) * in_h * in_w;
            const float* g = grad_output + (n * out_c + o) * out_h * out_w;
            for (u32 oh = 0; oh < out_h; ++oh) {
                u32 ih = oh * stride + kh - pad;
                if (ih >= in_h) continue;
                for (u32 ow = 0; ow < out_w; ++ow) {
                    u32 iw = ow * stride + kw - pad;
                    if (iw >= in_w) continue;
                    acc = kahan_add(acc, g[oh * out_w + ow] * x[ih * in_w + iw]);
                }
            }
        }
        grad_weight[i] = grad_weight[i] + (acc.s - acc.c);
    }
}
