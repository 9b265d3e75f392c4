// ROI-align with torchvision semantics (`torchvision.ops.roi_align`), forward and backward,
// one thread per (box, channel, bin), each decoding its box; a one-block check first records
// LabelOutOfRange at the lowest invalid box. Geometry is in f32, in torchvision's expression
// order, as in the wgpu backend.

// Sampling points per bin per axis are capped, as in the CPU backend, so an absurd box cannot
// make a thread loop for hours.
#define ROI_MAX_GRID 65536u

// What the ROI-align kernels read (RoiAlignArgs in ops/roi_align.rs): the feature map's shape,
// the boxes, the output bins, the sampling grid (0: adaptive) and torchvision's options.
struct RoiAlignArgs {
    u32 batch, channels, height, width, rois, pooled_h, pooled_w, sampling_ratio, aligned;
    float spatial_scale;
};
ARGS_SIZE(RoiAlignArgs);
ARGS_FIELD(RoiAlignArgs, batch);
ARGS_FIELD(RoiAlignArgs, channels);
ARGS_FIELD(RoiAlignArgs, height);
ARGS_FIELD(RoiAlignArgs, width);
ARGS_FIELD(RoiAlignArgs, rois);
ARGS_FIELD(RoiAlignArgs, pooled_h);
ARGS_FIELD(RoiAlignArgs, pooled_w);
ARGS_FIELD(RoiAlignArgs, sampling_ratio);
ARGS_FIELD(RoiAlignArgs, aligned);
ARGS_FIELD(RoiAlignArgs, spatial_scale);

struct Roi {
    bool valid;
    u32 batch;
    float start_h, start_w, bin_h, bin_w;
    u32 grid_h, grid_w;
    float count;
};

// Box r's batch index and whether it is valid; when invalid, the index is the value the fault
// reports: the truncated index, or u32::MAX for a NaN, a negative one or one past 2^32.
__device__ u32 roi_batch(const float* boxes, u32 r, u32 batch, bool* valid) {
    float v = boxes[(size_t)r * 5];
    *valid = false;
    if (!is_finite_bits(v) || v <= -1.0f) return 0xffffffffu;
    float t = truncf(v);
    if (t >= 4294967296.0f) return 0xffffffffu;
    u32 i = (u32)fmaxf(t, 0.0f);
    *valid = i < batch;
    return i;
}

__device__ u32 roi_grid_size(float size, u32 bins, u32 sampling_ratio) {
    if (sampling_ratio > 0u) return min(sampling_ratio, ROI_MAX_GRID);
    float points = ceilf(size / (float)bins);
    // +inf saturates; NaN (a non-finite box) gets no samples.
    if (!is_finite_bits(points)) return points > 0.0f ? ROI_MAX_GRID : 0u;
    if (points >= 1.0f) return (u32)fminf(points, (float)ROI_MAX_GRID);
    return 0u;
}

__device__ Roi roi_decode(const float* boxes, u32 r, RoiAlignArgs s) {
    Roi roi;
    roi.batch = roi_batch(boxes, r, s.batch, &roi.valid);
    float offset = s.aligned ? 0.5f : 0.0f;
    const float* b = boxes + (size_t)r * 5;
    float start_w = b[1] * s.spatial_scale - offset;
    float start_h = b[2] * s.spatial_scale - offset;
    float end_w = b[3] * s.spatial_scale - offset;
    float end_h = b[4] * s.spatial_scale - offset;
    float roi_w = end_w - start_w;
    float roi_h = end_h - start_h;
    if (!s.aligned) {
        // As torchvision's std::max: a NaN size stays NaN.
        roi_w = roi_w < 1.0f ? 1.0f : roi_w;
        roi_h = roi_h < 1.0f ? 1.0f : roi_h;
    }
    roi.start_h = start_h;
    roi.start_w = start_w;
    roi.bin_h = roi_h / (float)s.pooled_h;
    roi.bin_w = roi_w / (float)s.pooled_w;
    roi.grid_h = roi_grid_size(roi_h, s.pooled_h, s.sampling_ratio);
    roi.grid_w = roi_grid_size(roi_w, s.pooled_w, s.sampling_ratio);
    roi.count = fmaxf((float)roi.grid_h * (float)roi.grid_w, 1.0f);
    return roi;
}

// Sample i of bin p along one axis: torchvision's expression order.
__device__ float roi_sample_at(float start, float bin, u32 p, u32 i, u32 grid) {
    return start + (float)p * bin + ((float)i + 0.5f) * bin / (float)grid;
}

// The taps along one axis of a coordinate known to lie in [-1, size].
__device__ void roi_axis(float v, u32 size, u32* low, u32* high, float* frac) {
    float c = fmaxf(v, 0.0f);
    u32 l = (u32)c;
    if (l >= size - 1u) {
        *low = size - 1u;
        *high = size - 1u;
        *frac = 0.0f;
    } else {
        *low = l;
        *high = l + 1u;
        *frac = c - (float)l;
    }
}

// torchvision's bilinear_interpolate: nothing beyond [-1, size] on either axis (nor at a
// non-finite coordinate); [-1, 0] clamps to 0; at or past the last row/column both taps
// collapse onto it. Returns false when the point contributes nothing.
__device__ bool roi_taps(float y, float x, u32 height, u32 width, u32 at[4], float w[4]) {
    if (height == 0u || width == 0u || !is_finite_bits(y) || !is_finite_bits(x)) return false;
    if (y < -1.0f || y > (float)height || x < -1.0f || x > (float)width) return false;
    u32 y0, y1, x0, x1;
    float fy, fx;
    roi_axis(y, height, &y0, &y1, &fy);
    roi_axis(x, width, &x0, &x1, &fx);
    float hy = 1.0f - fy, hx = 1.0f - fx;
    at[0] = y0 * width + x0;
    at[1] = y0 * width + x1;
    at[2] = y1 * width + x0;
    at[3] = y1 * width + x1;
    w[0] = hy * hx;
    w[1] = hy * fx;
    w[2] = fy * hx;
    w[3] = fy * fx;
    return true;
}

extern "C" __global__ void roi_check(FaultSlot* fault, const float* boxes, RoiAlignArgs args) {
    __shared__ u32 first;
    if (threadIdx.x == 0) first = 0xffffffffu;
    __syncthreads();
    for (u32 r = threadIdx.x; r < args.rois; r += blockDim.x) {
        bool valid;
        roi_batch(boxes, r, args.batch, &valid);
        if (!valid) {
            atomicMin(&first, r);
            break;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0 && first != 0xffffffffu) {
        bool valid;
        u32 index = roi_batch(boxes, first, args.batch, &valid);
        record_fault(fault, FAULT_LABEL_OUT_OF_RANGE, first, index);
    }
}

// The mean over the bin's sampling grid of the bilinear samples (points off the map count as 0
// but stay in the mean); a box with an invalid batch index outputs 0.
extern "C" __global__ void roi_forward(const float* features, const float* boxes, float* output,
                                       RoiAlignArgs args) {
    size_t bins = (size_t)args.pooled_h * args.pooled_w;
    FOR_EACH(i, (size_t)args.rois * args.channels * bins) {
        u32 bin = (u32)(i % bins);
        size_t rc = i / bins;
        u32 c = (u32)(rc % args.channels);
        Roi roi = roi_decode(boxes, (u32)(rc / args.channels), args);
        if (!roi.valid) {
            output[i] = 0.0f;
            continue;
        }
        const float* plane =
            features + ((size_t)roi.batch * args.channels + c) * args.height * args.width;
        u32 ph = bin / args.pooled_w, pw = bin % args.pooled_w;
        float sum = 0.0f;
        for (u32 iy = 0; iy < roi.grid_h; ++iy) {
            float y = roi_sample_at(roi.start_h, roi.bin_h, ph, iy, roi.grid_h);
            for (u32 ix = 0; ix < roi.grid_w; ++ix) {
                float x = roi_sample_at(roi.start_w, roi.bin_w, pw, ix, roi.grid_w);
                u32 at[4];
                float w[4];
                if (roi_taps(y, x, args.height, args.width, at, w)) {
                    sum = sum + w[0] * plane[at[0]];
                    sum = sum + w[1] * plane[at[1]];
                    sum = sum + w[2] * plane[at[2]];
                    sum = sum + w[3] * plane[at[3]];
                }
            }
        }
        output[i] = sum / roi.count;
    }
}

// Scatters grad_output / count times each bilinear weight onto grad_features (accumulating,
// with float atomics: the order of the additions onto one element varies between runs).
extern "C" __global__ void roi_backward(const float* grad_output, const float* boxes,
                                        float* grad_features, RoiAlignArgs args) {
    size_t bins = (size_t)args.pooled_h * args.pooled_w;
    FOR_EACH(i, (size_t)args.rois * args.channels * bins) {
        u32 bin = (u32)(i % bins);
        size_t rc = i / bins;
        u32 c = (u32)(rc % args.channels);
        Roi roi = roi_decode(boxes, (u32)(rc / args.channels), args);
        if (!roi.valid) continue;
        float share = grad_output[i] / roi.count;
        float* plane =
            grad_features + ((size_t)roi.batch * args.channels + c) * args.height * args.width;
        u32 ph = bin / args.pooled_w, pw = bin % args.pooled_w;
        for (u32 iy = 0; iy < roi.grid_h; ++iy) {
            float y = roi_sample_at(roi.start_h, roi.bin_h, ph, iy, roi.grid_h);
            for (u32 ix = 0; ix < roi.grid_w; ++ix) {
                float x = roi_sample_at(roi.start_w, roi.bin_w, pw, ix, roi.grid_w);
                u32 at[4];
                float w[4];
                if (roi_taps(y, x, args.height, args.width, at, w)) {
                    for (int k = 0; k < 4; ++k) {
                        float v = share * w[k];
                        if (v != 0.0f) atomicAdd(&plane[at[k]], v);
                    }
                }
            }
        }
    }
}
