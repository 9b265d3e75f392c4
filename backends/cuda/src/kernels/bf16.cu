// Conversions for --precision bf16: products read bf16 copies of their f32 inputs and their
// bf16 results come back to f32. bf16 is the top half of an f32; no header is needed.

typedef unsigned short bf16_bits;

// What the conversion kernels read (Bf16Args in ops/bf16.rs): n elements.
struct Bf16Args {
    size_t n;
};
ARGS_SIZE(Bf16Args);
ARGS_FIELD(Bf16Args, n);

// Round to nearest, ties to even (as torch's .to(torch.bfloat16)); a NaN stays a quiet NaN
// with its sign, where plain rounding could carry it into an infinity.
__device__ bf16_bits f32_to_bf16_bits(float x) {
    u32 bits = __float_as_uint(x);
    if (is_nan_bits(x)) return (bf16_bits)((bits >> 16) | 0x0040u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (bf16_bits)(bits >> 16);
}

__device__ float bf16_bits_to_f32(bf16_bits h) { return __uint_as_float(((u32)h) << 16); }

extern "C" __global__ void f32_to_bf16(const float* src, bf16_bits* dst, Bf16Args args) {
    FOR_EACH(e, args.n) dst[e] = f32_to_bf16_bits(src[e]);
}

extern "C" __global__ void bf16_to_f32(const bf16_bits* src, float* dst, Bf16Args args) {
    FOR_EACH(e, args.n) dst[e] = bf16_bits_to_f32(src[e]);
}

// dst += src: a bf16 weight gradient into the f32 gradient the optimizer reads.
extern "C" __global__ void bf16_accumulate_f32(const bf16_bits* src, float* dst,
                                               Bf16Args args) {
    FOR_EACH(e, args.n) dst[e] = dst[e] + bf16_bits_to_f32(src[e]);
}
