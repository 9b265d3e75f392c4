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

// The column tile a workgroup owns when the host folds a long column axis into x and y.
fn column_tile(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// This invocation's four columns, and which of them lie inside `len`.
fn my_columns(c0: u32, t: u32) -> vec4<u32> {
    return vec4<u32>(c0 + t) + vec4<u32>(0u, THREADS, 2u * THREADS, 3u * THREADS);
}

// Four loads of `addr` where `ok`, zeros elsewhere (an out-of-range address is never read: it
// is replaced by 0 before the load).
fn gather4(ok: vec4<bool>, addr: vec4<u32>) -> vec4<u32> {
    return select(vec4<u32>(0u), addr, ok);
}
