// The blocking every conv2d pass shares. A workgroup owns ROWS rows (channels) and COLS columns
// of an implicit GEMM; each invocation accumulates all ROWS rows of its four columns
// (t + THREADS * j), as one vec4 per row. Per reduction index the pass loads its four values
// of the gathered operand (input pixels, grad_output pixels or im2col columns) straight into
// registers: each is used by this invocation only, so staging it would only add traffic. The
// other operand (weights or grad_output rows) is the same for every invocation: the
// workgroup stages BK reduction indices of it in `a_tile` and every invocation reads it
// there (a broadcast).
//
// Register use is constant-indexed throughout: a dynamically indexed array is spilled to
// per-invocation scratch memory by some drivers (lavapipe among them).

const THREADS: u32 = 64u;
const ROWS: u32 = 16u;
const COLS: u32 = 256u;
// Reduction indices staged per round: one per invocation.
const BK: u32 = 64u;

// Every pass binds its operands in these roles, so the loads and stores below serve all three.
// Input or grad_output pixels, read straight into registers.
@group(0) @binding(0) var<storage, read> gathered: array<f32>;
// Weights or grad_output rows, staged in `a_tile`.
@group(0) @binding(1) var<storage, read> staged: array<f32>;
// Output, grad_input, or grad_weight or its slices.
@group(0) @binding(2) var<storage, read_write> result: array<f32>;

// [reduction index][row quad]
var<workgroup> a_tile: array<vec4<f32>, BK * 4u>;
// [row] of the invocation's four columns
var<private> acc: array<vec4<f32>, 16>;

fn step(kk: u32, b: vec4<f32>) {
    let a0 = a_tile[kk * 4u];
    let a1 = a_tile[kk * 4u + 1u];
    let a2 = a_tile[kk * 4u + 2u];
    let a3 = a_tile[kk * 4u + 3u];
    acc[0] = fma(vec4<f32>(a0.x), b, acc[0]);
    acc[1] = fma(vec4<f32>(a0.y), b, acc[1]);
    acc[2] = fma(vec4<f32>(a0.z), b, acc[2]);
    acc[3] = fma(vec4<f32>(a0.w), b, acc[3]);
    acc[4] = fma(vec4<f32>(a1.x), b, acc[4]);
    acc[5] = fma(vec4<f32>(a1.y), b, acc[5]);
    acc[6] = fma(vec4<f32>(a1.z), b, acc[6]);
    acc[7] = fma(vec4<f32>(a1.w), b, acc[7]);
    acc[8] = fma(vec4<f32>(a2.x), b, acc[8]);
    acc[9] = fma(vec4<f32>(a2.y), b, acc[9]);
    acc[10] = fma(vec4<f32>(a2.z), b, acc[10]);
    acc[11] = fma(vec4<f32>(a2.w), b, acc[11]);
    acc[12] = fma(vec4<f32>(a3.x), b, acc[12]);
    acc[13] = fma(vec4<f32>(a3.y), b, acc[13]);
    acc[14] = fma(vec4<f32>(a3.z), b, acc[14]);
    acc[15] = fma(vec4<f32>(a3.w), b, acc[15]);
}

// The builtins of a column-tiled pass (forward and backward-data): its column tiles are
// folded into x and y (they can outnumber one dimension's limit), its row tiles run along z.
struct ColumnTiled {
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
}

// The workgroup's column tile.
fn column_tile(id: ColumnTiled) -> u32 {
    return id.wid.x + id.wid.y * id.nwg.x;
}

// The workgroup's first row (channel).
fn first_row(id: ColumnTiled) -> u32 {
    return id.wid.z * ROWS;
}

// The invocation's four columns (t + THREADS * j of its workgroup's tile).
fn my_columns(id: ColumnTiled) -> vec4<u32> {
    return vec4<u32>(column_tile(id) * COLS + id.t)
        + vec4<u32>(0u, THREADS, 2u * THREADS, 3u * THREADS);
}

// Four loads of `addr` where `ok`, zeros elsewhere (an out-of-range address is never read: it
// is replaced by 0 before the load).
fn gather(ok: vec4<bool>, addr: vec4<u32>) -> vec4<f32> {
    let at = select(vec4<u32>(0u), addr, ok);
    let x = vec4<f32>(gathered[at.x], gathered[at.y], gathered[at.z], gathered[at.w]);
    return select(vec4<f32>(0.0), x, ok);
}

// A reduction index k = (channel, outer tap, inner tap) advanced one index at a time, so the
// loop needs no division: `chan` is the channel's offset in the gathered tensor.
struct Tap { outer: u32, inner: u32, chan: u32 }

// The tap after `tap`, with `inner_len` inner taps per outer one, `outer_len` outer taps per
// channel, and channels `plane` apart.
fn next_tap(tap: Tap, inner_len: u32, outer_len: u32, plane: u32) -> Tap {
    var n = tap;
    n.inner = n.inner + 1u;
    if (n.inner == inner_len) {
        n.inner = 0u;
        n.outer = n.outer + 1u;
        if (n.outer == outer_len) {
            n.outer = 0u;
            n.chan = n.chan + plane;
        }
    }
    return n;
}

// Stages rows m0 .. m0 + ROWS of one reduction index, row m read at `off + m * row_stride`, in
// slot `slot` of `a_tile`. Rows from `m_len` on stage zeros, and so does every row when the
// index is not `live` (past the end of the reduction), so the tile's padding adds nothing.
fn stage_rows(slot: u32, m0: u32, m_len: u32, live: bool, off: u32, row_stride: u32) {
    for (var q = 0u; q < 4u; q = q + 1u) {
        var v = vec4<f32>(0.0);
        let m = m0 + 4u * q;
        if (live) {
            if (m < m_len) { v.x = staged[off + m * row_stride]; }
            if (m + 1u < m_len) { v.y = staged[off + (m + 1u) * row_stride]; }
            if (m + 2u < m_len) { v.z = staged[off + (m + 2u) * row_stride]; }
            if (m + 3u < m_len) { v.w = staged[off + (m + 3u) * row_stride]; }
        }
        a_tile[slot * 4u + q] = v;
    }
}

// Writes the accumulated tile: row m of the invocation's four columns goes to
// `base + m * row_stride` where `ok`, for the rows below `m_len`; with `add` it is added to
// what is there.
fn store_tile(m0: u32, m_len: u32, row_stride: u32, add: bool, ok: vec4<bool>, base: vec4<u32>) {
    // One call per register: a dynamic index into `acc` would put it in memory.
    store_row(m0 + 0u, acc[0], m_len, row_stride, add, ok, base);
    store_row(m0 + 1u, acc[1], m_len, row_stride, add, ok, base);
    store_row(m0 + 2u, acc[2], m_len, row_stride, add, ok, base);
    store_row(m0 + 3u, acc[3], m_len, row_stride, add, ok, base);
    store_row(m0 + 4u, acc[4], m_len, row_stride, add, ok, base);
    store_row(m0 + 5u, acc[5], m_len, row_stride, add, ok, base);
    store_row(m0 + 6u, acc[6], m_len, row_stride, add, ok, base);
    store_row(m0 + 7u, acc[7], m_len, row_stride, add, ok, base);
    store_row(m0 + 8u, acc[8], m_len, row_stride, add, ok, base);
    store_row(m0 + 9u, acc[9], m_len, row_stride, add, ok, base);
    store_row(m0 + 10u, acc[10], m_len, row_stride, add, ok, base);
    store_row(m0 + 11u, acc[11], m_len, row_stride, add, ok, base);
    store_row(m0 + 12u, acc[12], m_len, row_stride, add, ok, base);
    store_row(m0 + 13u, acc[13], m_len, row_stride, add, ok, base);
    store_row(m0 + 14u, acc[14], m_len, row_stride, add, ok, base);
    store_row(m0 + 15u, acc[15], m_len, row_stride, add, ok, base);
}

fn store_row(
    m: u32,
    v: vec4<f32>,
    m_len: u32,
    row_stride: u32,
    add: bool,
    ok: vec4<bool>,
    base: vec4<u32>,
) {
    if (m >= m_len) { return; }
    let at = base + vec4<u32>(m * row_stride);
    if (add) {
        if (ok.x) { result[at.x] = result[at.x] + v.x; }
        if (ok.y) { result[at.y] = result[at.y] + v.y; }
        if (ok.z) { result[at.z] = result[at.z] + v.z; }
        if (ok.w) { result[at.w] = result[at.w] + v.w; }
    } else {
        if (ok.x) { result[at.x] = v.x; }
        if (ok.y) { result[at.y] = v.y; }
        if (ok.z) { result[at.z] = v.z; }
        if (ok.w) { result[at.w] = v.w; }
    }
}
