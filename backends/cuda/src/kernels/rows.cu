// Row kernels: one block of ROW_THREADS per row, looping over the row in strides and reducing
// in shared memory, so rows of any length take one launch. The same arithmetic, in the same
// order, as the wgpu backend's row shaders.

#define MIN_NORMAL 1.17549435e-38f

// What the row kernels read (RowsArgs in ops/rows.rs): rows of cols columns of which the first
// valid take part; the losses' gradient scale; the contrastive kernels' anchor offset, batch,
// class count, and weighting (decoupled: DSCL with beta, else SupCon).
struct RowsArgs {
    u32 rows, cols, valid, row_offset, batch, classes, decoupled;
    float beta, grad_scale;
};
ARGS_SIZE(RowsArgs);
ARGS_FIELD(RowsArgs, rows);
ARGS_FIELD(RowsArgs, cols);
ARGS_FIELD(RowsArgs, valid);
ARGS_FIELD(RowsArgs, row_offset);
ARGS_FIELD(RowsArgs, batch);
ARGS_FIELD(RowsArgs, classes);
ARGS_FIELD(RowsArgs, decoupled);
ARGS_FIELD(RowsArgs, beta);
ARGS_FIELD(RowsArgs, grad_scale);

// 2^j for -126 <= j <= 127, built from the bits.
__device__ float pow2(int j) { return __uint_as_float((u32)(j + 127) << 23); }

// k such that m * 2^k lies in [0.5, 1) for a normal m, or in [1, 2^23) for a subnormal one;
// 0 for 0 and non-finite m.
__device__ int scale_exponent(float m) {
    u32 bits = __float_as_uint(m);
    int e = (int)((bits >> 23) & 0xffu);
    if (bits == 0u || e == 255) return 0;
    if (e == 0) return 149;
    return 126 - e;
}

// norms[r] = ||x_r||, y_r = x_r / norms[r]. The row is scaled by a power of two that brings
// its largest magnitude into [0.5, 1) before squaring, so neither huge nor subnormal rows
// over- or underflow; scaling by a power of two is exact.
extern "C" __global__ void l2_normalize_forward(
    FaultSlot* fault, const float* x, float* y, float* norms, RowsArgs args) {
    __shared__ float scratch[ROW_THREADS];
    u32 row = blockIdx.x;
    if (row >= args.rows) return;
    const float* xr = x + (size_t)row * args.cols;
    float* yr = y + (size_t)row * args.cols;
    float m = 0.0f;
    for (u32 c = threadIdx.x; c < args.cols; c += ROW_THREADS) m = nan_max(m, fabsf(xr[c]));
    m = block_max(m, scratch);
    int k = scale_exponent(m);
    float f1 = pow2(k / 2);
    float f2 = pow2(k - k / 2);
    Kahan acc = {0.0f, 0.0f};
    for (u32 c = threadIdx.x; c < args.cols; c += ROW_THREADS) {
        float v = (xr[c] * f1) * f2;
        acc = kahan_add(acc, v * v);
    }
    float scaled = sqrtf(block_sum(acc.s - acc.c, scratch));
    float norm = (scaled * pow2(-(k / 2))) * pow2(-(k - k / 2));
    bool ok = false;
    if (!is_finite_bits(m)) {
        if (threadIdx.x == 0) { norms[row] = m; record_fault(fault, FAULT_NON_FINITE, row, 0u); }
    } else if (!is_finite_bits(norm)) {
        if (threadIdx.x == 0) { norms[row] = norm; record_fault(fault, FAULT_NON_FINITE, row, 0u); }
    } else if (norm < MIN_NORMAL) {
        if (threadIdx.x == 0) { norms[row] = norm; record_fault(fault, FAULT_ZERO_NORM_ROW, row, 0u); }
    } else {
        if (threadIdx.x == 0) norms[row] = norm;
        ok = true;
    }
    for (u32 c = threadIdx.x; c < args.cols; c += ROW_THREADS) {
        yr[c] = ok ? ((xr[c] * f1) * f2) / scaled : 0.0f;
    }
}

// grad_x_r = (grad_y_r - y_r (y_r . grad_y_r)) / norms[r], 0 for a row the forward could not
// normalise.
extern "C" __global__ void l2_normalize_backward(
    const float* y, const float* norms, const float* grad_y, float* grad_x, RowsArgs args) {
    __shared__ float scratch[ROW_THREADS];
    u32 row = blockIdx.x;
    if (row >= args.rows) return;
    size_t base = (size_t)row * args.cols;
    Kahan acc = {0.0f, 0.0f};
    for (u32 c = threadIdx.x; c < args.cols; c += ROW_THREADS) {
        acc = kahan_add(acc, y[base + c] * grad_y[base + c]);
    }
    float dot = block_sum(acc.s - acc.c, scratch);
    float norm = norms[row];
    bool ok = is_finite_bits(norm) && norm >= MIN_NORMAL;
    for (u32 c = threadIdx.x; c < args.cols; c += ROW_THREADS) {
        grad_x[base + c] = ok ? (grad_y[base + c] - y[base + c] * dot) / norm : 0.0f;
    }
}

// The NaN-propagating maximum of a row's valid columns (valid >= 1), starting from column 0.
__device__ float row_max(const float* xr, u32 valid, float* scratch) {
    float m = xr[0];
    for (u32 c = threadIdx.x; c < valid; c += ROW_THREADS) m = nan_max(m, xr[c]);
    return block_max(m, scratch);
}

__device__ float row_sum_exp(const float* xr, u32 valid, float shift, float* scratch) {
    Kahan acc = {0.0f, 0.0f};
    for (u32 c = threadIdx.x; c < valid; c += ROW_THREADS) acc = kahan_add(acc, expf(xr[c] - shift));
    return block_sum(acc.s - acc.c, scratch);
}

// Softmax over the valid columns with plain max subtraction, as torch.softmax (a row with an
// infinity comes out NaN); masked columns are 0.
extern "C" __global__ void row_softmax(
    FaultSlot* fault, const float* x, float* out, RowsArgs args) {
    __shared__ float scratch[ROW_THREADS];
    u32 row = blockIdx.x;
    if (row >= args.rows) return;
    const float* xr = x + (size_t)row * args.cols;
    float* outr = out + (size_t)row * args.cols;
    float m = row_max(xr, args.valid, scratch);
    float s = row_sum_exp(xr, args.valid, m, scratch);
    if (threadIdx.x == 0 && !is_finite_bits(m)) record_fault(fault, FAULT_NON_FINITE, row, 0u);
    for (u32 c = threadIdx.x; c < args.cols; c += ROW_THREADS) {
        outr[c] = c < args.valid ? expf(xr[c] - m) / s : 0.0f;
    }
}

// out[r] = log sum exp over the valid columns, shifted as torch.logsumexp: a row of -inf gives
// -inf, a +inf entry +inf, a NaN NaN.
extern "C" __global__ void row_logsumexp(
    FaultSlot* fault, const float* x, float* out, RowsArgs args) {
    __shared__ float scratch[ROW_THREADS];
    u32 row = blockIdx.x;
    if (row >= args.rows) return;
    const float* xr = x + (size_t)row * args.cols;
    float m = row_max(xr, args.valid, scratch);
    float s = row_sum_exp(xr, args.valid, torch_shift(m), scratch);
    if (threadIdx.x == 0) {
        float lse = m;
        if (is_finite_bits(m)) {
            lse = m + logf(s);
        } else {
            record_fault(fault, FAULT_NON_FINITE, row, 0u);
        }
        out[row] = lse;
    }
}

// Cross-entropy against soft targets fused with its gradient, in place on the logits:
// loss = sum(t) * logsumexp(x) - sum(t * x); gradient = grad_scale (softmax(x) sum(t) - t).
extern "C" __global__ void soft_cross_entropy(
    FaultSlot* fault, float* logits, const float* targets, float* loss, RowsArgs args) {
    __shared__ float scratch[ROW_THREADS];
    u32 row = blockIdx.x;
    if (row >= args.rows) return;
    float* lr = logits + (size_t)row * args.cols;
    const float* tr = targets + (size_t)row * args.cols;
    float m_raw = row_max(lr, args.valid, scratch);
    float shift = torch_shift(m_raw);
    Kahan se = {0.0f, 0.0f}, st = {0.0f, 0.0f}, sd = {0.0f, 0.0f};
    for (u32 c = threadIdx.x; c < args.valid; c += ROW_THREADS) {
        float d = lr[c] - shift;
        float tc = tr[c];
        se = kahan_add(se, expf(d));
        st = kahan_add(st, tc);
        sd = kahan_add(sd, tc * d);
    }
    float s = block_sum(se.s - se.c, scratch);
    float tsum = block_sum(st.s - st.c, scratch);
    float dsum = block_sum(sd.s - sd.c, scratch);
    float log_sum = logf(s);
    if (threadIdx.x == 0) {
        if (!is_finite_bits(m_raw) || !is_finite_bits(shift + log_sum)) {
            record_fault(fault, FAULT_NON_FINITE, row, 0u);
        }
        loss[row] = tsum * log_sum - dsum;
    }
    // Each thread rewrites only the columns it read.
    float a = tsum / s;
    for (u32 c = threadIdx.x; c < args.cols; c += ROW_THREADS) {
        float g = 0.0f;
        if (c < args.valid) g = args.grad_scale * (expf(lr[c] - shift) * a - tr[c]);
        lr[c] = g;
    }
}

// Cross-entropy against hard labels fused with its gradient, in place on the logits:
// loss = logsumexp(x) - x[label]; gradient = grad_scale (softmax(x) - onehot(label)).
extern "C" __global__ void softmax_cross_entropy(
    FaultSlot* fault, float* logits, const u32* labels, float* loss, RowsArgs args) {
    __shared__ float scratch[ROW_THREADS];
    u32 row = blockIdx.x;
    if (row >= args.rows) return;
    float* lr = logits + (size_t)row * args.cols;
    u32 label = labels[row];
    bool in_range = label < args.valid;
    float x_label = in_range ? lr[label] : 0.0f;
    float m_raw = row_max(lr, args.valid, scratch);
    float shift = torch_shift(m_raw);
    float s = row_sum_exp(lr, args.valid, shift, scratch);
    float log_sum = logf(s);
    // Every thread has read the label's logit before its owner overwrites it (block_sum ends
    // with a barrier).
    if (threadIdx.x == 0) {
        float l = 0.0f;
        if (!in_range) {
            record_fault(fault, FAULT_LABEL_OUT_OF_RANGE, row, label);
        } else {
            if (!is_finite_bits(m_raw) || !is_finite_bits(shift + log_sum)) {
                record_fault(fault, FAULT_NON_FINITE, row, 0u);
            }
            l = log_sum - (x_label - shift);
        }
        loss[row] = l;
    }
    for (u32 c = threadIdx.x; c < args.cols; c += ROW_THREADS) {
        float g = 0.0f;
        if (in_range && c < args.valid) {
            g = args.grad_scale * (expf(lr[c] - shift) / s);
            if (c == label) g -= args.grad_scale;
        }
        lr[c] = g;
    }
}

// The first contrast label >= num_classes among the first valid columns, recorded as
// LabelOutOfRange (column, label). One block, launched before the rows, so that a label fault
// wins over the rows' non-finite faults and the lowest column is the one reported.
extern "C" __global__ void contrastive_labels(FaultSlot* fault, const u32* labels, RowsArgs args) {
    __shared__ u32 first;
    if (threadIdx.x == 0) first = 0xffffffffu;
    __syncthreads();
    for (u32 j = threadIdx.x; j < args.valid; j += ROW_THREADS) {
        if (labels[j] >= args.classes) {
            atomicMin(&first, j);
            break;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0 && first < args.valid) {
        record_fault(fault, FAULT_LABEL_OUT_OF_RANGE, first, labels[first]);
    }
}

// SupCon / DSCL loss of a block of anchors fused with its gradient, in place on the logits.
// Block row r is anchor i = row_offset + r; A(i) = valid columns except i; its augmented view
// is column batch + i. Three sweeps over the row: the maximum over A(i); the exponential sum
// and the positives' count and shifted logit sum (the view apart, since DSCL weighs it
// differently); then the gradient, recomputing the exponentials rather than storing them.
extern "C" __global__ void contrastive_rows(
    FaultSlot* fault, float* logits, const u32* labels, float* loss, RowsArgs args) {
    __shared__ float scratch[ROW_THREADS];
    __shared__ u32 count_total;
    u32 row = blockIdx.x;
    if (row >= args.rows) return;
    float* lr = logits + (size_t)row * args.cols;
    u32 anchor = args.row_offset + row;
    u32 view = args.batch + anchor;
    u32 anchor_label = labels[anchor];
    // The host checked valid >= 2 * batch, so A(i) holds column 0 or 1, and the view.
    float s_view = lr[view];
    bool view_pos = labels[view] == anchor_label;

    float m = lr[anchor == 0u ? 1u : 0u];
    for (u32 j = threadIdx.x; j < args.valid; j += ROW_THREADS) {
        if (j != anchor) m = nan_max(m, lr[j]);
    }
    float m_raw = block_max(m, scratch);
    float shift = torch_shift(m_raw);

    if (threadIdx.x == 0) count_total = 0u;
    Kahan sum = {0.0f, 0.0f}, pos = {0.0f, 0.0f};
    u32 count = 0u;
    for (u32 j = threadIdx.x; j < args.valid; j += ROW_THREADS) {
        if (j != anchor) {
            float d = lr[j] - shift;
            sum = kahan_add(sum, expf(d));
            if (j != view && labels[j] == anchor_label) {
                pos = kahan_add(pos, d);
                count += 1u;
            }
        }
    }
    float total = block_sum(sum.s - sum.c, scratch);
    float pos_sum = block_sum(pos.s - pos.c, scratch);
    atomicAdd(&count_total, count);
    // Also orders every read of this row before any overwrite below.
    __syncthreads();
    u32 others = count_total;

    float n_others = (float)others;
    float w_view = view_pos ? 1.0f : 0.0f;
    float w_other = 1.0f;
    float w_total = w_view + n_others;
    if (args.decoupled) {
        w_other = others > 0u ? args.beta / n_others : 0.0f;
        w_total = others > 0u ? w_view + args.beta : w_view;
    }
    float weighted = w_view * (s_view - shift) + w_other * pos_sum;
    float log_sum = logf(total);
    if (threadIdx.x == 0) {
        if (!is_finite_bits(m_raw) || !is_finite_bits(shift + log_sum)) {
            record_fault(fault, FAULT_NON_FINITE, anchor, 0u);
        }
        loss[anchor] = w_total > 0.0f ? log_sum - weighted / w_total : 0.0f;
    }
    // An anchor without positive weight gets a zero row.
    bool live = w_total > 0.0f;
    float inv_total = 1.0f / w_total;
    float g_other = args.grad_scale * w_other * inv_total;
    float g_view = args.grad_scale * w_view * inv_total;
    for (u32 j = threadIdx.x; j < args.cols; j += ROW_THREADS) {
        float g = 0.0f;
        if (live && j < args.valid && j != anchor) {
            g = args.grad_scale * (expf(lr[j] - shift) / total);
            if (j == view) {
                g -= g_view;
            } else if (labels[j] == anchor_label) {
                g -= g_other;
            }
        }
        lr[j] = g;
    }
}
