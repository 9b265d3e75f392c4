// Shared by every dscl CUDA kernel (NVRTC concatenates the sources; no host headers).
//
// Value faults go to a device-side slot: the first one since the host last cleared it wins,
// as in the other backends. Every kernel that can fault takes the slot as its first argument.

typedef unsigned int u32;

struct FaultSlot { u32 flag; u32 kind; u32 index; u32 value; };

#define FAULT_NON_FINITE 1u
#define FAULT_ZERO_NORM_ROW 2u
#define FAULT_LABEL_OUT_OF_RANGE 3u

__device__ void record_fault(FaultSlot* slot, u32 kind, u32 index, u32 value) {
    if (atomicCAS(&slot->flag, 0u, 1u) == 0u) {
        slot->kind = kind;
        slot->index = index;
        slot->value = value;
    }
}

// By bits: --use_fast_math, or a compiler assuming no NaN, must not fold these away.
__device__ bool is_finite_bits(float x) { return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u; }
__device__ bool is_nan_bits(float x) { return (__float_as_uint(x) & 0x7fffffffu) > 0x7f800000u; }
__device__ bool is_inf_bits(float x) { return (__float_as_uint(x) & 0x7fffffffu) == 0x7f800000u; }

// The larger of a and b, NaN when either is (as torch.max).
__device__ float nan_max(float a, float b) {
    if (is_nan_bits(a)) return a;
    if (is_nan_bits(b) || b > a) return b;
    return a;
}

// torch.logsumexp's shift: the maximum, or 0 when it is infinite (NaN stays NaN).
__device__ float torch_shift(float m) { return is_inf_bits(m) ? 0.0f : m; }

// Kahan summation: s holds the sum, c the low-order part lost so far (sum = s - c).
struct Kahan { float s; float c; };
__device__ Kahan kahan_add(Kahan k, float x) {
    float y = x - k.c;
    float u = k.s + y;
    Kahan r;
    r.c = (u - k.s) - y;
    r.s = u;
    return r;
}

// Block-wide reductions for blocks of ROW_THREADS threads: every thread gets the result; the
// scratch array is free again when they return.
#define ROW_THREADS 256

__device__ float block_sum(float v, float* scratch) {
    int t = threadIdx.x;
    scratch[t] = v;
    __syncthreads();
    for (int w = ROW_THREADS / 2; w > 0; w /= 2) {
        if (t < w) scratch[t] += scratch[t + w];
        __syncthreads();
    }
    float r = scratch[0];
    __syncthreads();
    return r;
}

__device__ float block_max(float v, float* scratch) {
    int t = threadIdx.x;
    scratch[t] = v;
    __syncthreads();
    for (int w = ROW_THREADS / 2; w > 0; w /= 2) {
        if (t < w) scratch[t] = nan_max(scratch[t], scratch[t + w]);
        __syncthreads();
    }
    float r = scratch[0];
    __syncthreads();
    return r;
}

// Each kernel family's scalar parameters are one struct, passed by value after the buffers and
// declared again in Rust (`kernel_args!` in ops/<family>.rs). The host defines the Rust layout
// of every struct S as S_SIZE, and S_f_OFFSET and S_f_TYPE for each field f (kernel_args.rs);
// each .cu asserts its struct with ARGS_SIZE(S) and an ARGS_FIELD(S, f) per field, so the two
// declarations cannot drift apart without failing this compile with the struct's name.
template <typename A, typename B> struct same_type { static const bool value = false; };
template <typename A> struct same_type<A, A> { static const bool value = true; };

// offsetof as EDG's <stddef.h> spells it: NVRTC has no host headers, and no
// __builtin_offsetof before CUDA 13.5.
#define ARGS_OFFSET(S, f) ((size_t)__INTADDR__(&(((S*)0)->f)))
#define ARGS_SIZE(S) \
    static_assert(sizeof(S) == S##_SIZE, #S ": its size differs from the Rust declaration's")
#define ARGS_FIELD(S, f) \
    static_assert(ARGS_OFFSET(S, f) == S##_##f##_OFFSET, \
                  #S "." #f ": its offset differs from the Rust declaration's"); \
    static_assert(same_type<decltype(S::f), S##_##f##_TYPE>::value, \
                  #S "." #f ": its type differs from the Rust declaration's")

// A grid-stride loop over n elements.
#define FOR_EACH(e, n) \
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < (size_t)(n); \
         e += (size_t)blockDim.x * gridDim.x)
