// Shared by the row kernels: one workgroup of ROW_WG invocations per row. Each invocation walks
// the row in strides of ROW_WG (so rows of any length work, and every invocation revisits the
// same columns in every sweep); partial results meet in a tree in workgroup memory.

const ROW_WG: u32 = 256u;
const MIN_NORMAL: f32 = 1.17549435e-38;

var<workgroup> red_f: array<f32, 256>;
var<workgroup> red_u: array<u32, 256>;

// Bit tests: the WGSL compiler may assume no NaN or infinity in float comparisons.
fn is_nan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn is_inf(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u; }
fn abs_bits(x: f32) -> f32 { return bitcast<f32>(bitcast<u32>(x) & 0x7fffffffu); }

// The larger of a and b, NaN when either is (as torch.max), whatever max() does with NaN.
fn nan_max(a: f32, b: f32) -> f32 {
    if (is_nan(a)) { return a; }
    if (is_nan(b) || b > a) { return b; }
    return a;
}

// torch.logsumexp's shift: the maximum, or 0 when it is infinite (NaN stays NaN).
fn torch_shift(m: f32) -> f32 {
    if (is_inf(m)) { return 0.0; }
    return m;
}

// The row of this workgroup when the grid is folded into x and y, counted from the run's first.
fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 { return wid.x + wid.y * nwg.x; }

// A tensor larger than one binding is bound as runs of rows, windows of the whole tensors.
// Words 12 to 14 of every row kernel place row r of the run: 12 the run's first row in the
// whole tensor (faults name rows there), 13 the run's first matrix element in its window,
// 14 its first per-row element (norms, labels, losses) in its window.
fn whole_row(r: u32) -> u32 { return pu(12u) + r; }
fn matrix_base(r: u32, cols: u32) -> u32 { return pu(13u) + r * cols; }
fn row_slot(r: u32) -> u32 { return pu(14u) + r; }

// Every reduction ends with a barrier, so the next one may reuse the workgroup arrays; the
// result comes through workgroupUniformLoad so that callers may branch on it around barriers.
fn reduce_max(t: u32, v: f32) -> f32 {
    red_f[t] = v;
    for (var w = ROW_WG / 2u; w > 0u; w = w / 2u) {
        workgroupBarrier();
        if (t < w) { red_f[t] = nan_max(red_f[t], red_f[t + w]); }
    }
    let r = workgroupUniformLoad(&red_f[0]);
    workgroupBarrier();
    return r;
}

fn reduce_sum(t: u32, v: f32) -> f32 {
    red_f[t] = v;
    for (var w = ROW_WG / 2u; w > 0u; w = w / 2u) {
        workgroupBarrier();
        if (t < w) { red_f[t] = red_f[t] + red_f[t + w]; }
    }
    let r = workgroupUniformLoad(&red_f[0]);
    workgroupBarrier();
    return r;
}

fn reduce_sum_u(t: u32, v: u32) -> u32 {
    red_u[t] = v;
    for (var w = ROW_WG / 2u; w > 0u; w = w / 2u) {
        workgroupBarrier();
        if (t < w) { red_u[t] = red_u[t] + red_u[t + w]; }
    }
    let r = workgroupUniformLoad(&red_u[0]);
    workgroupBarrier();
    return r;
}

fn reduce_min_u(t: u32, v: u32) -> u32 {
    red_u[t] = v;
    for (var w = ROW_WG / 2u; w > 0u; w = w / 2u) {
        workgroupBarrier();
        if (t < w) { red_u[t] = min(red_u[t], red_u[t + w]); }
    }
    let r = workgroupUniformLoad(&red_u[0]);
    workgroupBarrier();
    return r;
}
