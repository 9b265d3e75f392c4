// Strided-batched GEMM, C = alpha op(A) op(B) + beta C, row-major.
//
// One workgroup of 64 invocations computes a 64 x 64 tile of one C matrix. op(A) and op(B)
// pass through workgroup memory in slabs of 32 along k, each stored in the orientation in
// which it is contiguous in the source, and every access to workgroup memory is a vec4:
// drivers that emulate workgroup memory per invocation (lavapipe) pay per access, not per
// element, and per barrier, so slabs are as deep as 16 KiB allows. Invocation (tx, ty) owns
// four 4 x 4 blocks of outputs, at rows 4 ty + 32 bi .. + 3 and columns 4 tx + 32 bj .. + 3;
// each step multiplies 4 x 4 blocks of op(A) and op(B) as matrices.
// The four entry points differ only in the transposes, constants in each, so the compiler
// folds the layout choices.
//
// Words: 0 m, 1 n, 2 k, 3 lda, 4 ldb, 5 ldc, 6 a offset, 7 b offset, 8 c offset,
// 9 a batch stride, 10 b batch stride, 11 c batch stride, 12 alpha, 13 beta,
// 14 first batch, 15 first row tile, 16 first column tile (the host splits grids that exceed
// the per-dimension workgroup limit).

const TILE: u32 = 64u;
const SLAB: u32 = 32u;
// vec4s of one slab of one operand (TILE * SLAB / 4).
const SLAB_VECS: u32 = 512u;

// A transposed operand is stored [kk][row / 4] (a vec4 holds 4 rows), the others
// [row][kk / 4] (a vec4 holds 4 k); the same for B with columns. In B's [col][kk / 4] layout
// the 8 invocations that read together (one per tx) would hit one bank group, so the vec4s of
// each column are permuted (kq ^ (col / 4) % 8).
var<workgroup> a_tile: array<vec4<f32>, SLAB_VECS>;
var<workgroup> b_tile: array<vec4<f32>, SLAB_VECS>;

struct Tile {
    m: u32,
    n: u32,
    k: u32,
    row0: u32,
    col0: u32,
    a_base: u32,
    b_base: u32,
}

// Which of the 4 elements from (major, minor) along a stored row lie inside the matrix.
fn inside4(major: u32, minor: u32, major_lim: u32, minor_lim: u32, full: bool) -> vec4<bool> {
    let cols = vec4<u32>(minor) + vec4<u32>(0u, 1u, 2u, 3u);
    return vec4<bool>(full) | (vec4<bool>(major < major_lim) & (cols < vec4<u32>(minor_lim)));
}

// Moves vec4 number g of the slab at k0 of both operands into workgroup memory. A vec4 holds 4
// consecutive elements of a stored row ("major" is the stored row, "minor" the position in
// it); load_a4 and load_b4 (in the binding module) zero those outside the matrix.
fn stage(ta: bool, tb: bool, tl: Tile, k0: u32, g: u32, full: bool) {
    if (ta) {
        a_tile[g] = load_a4(tl.a_base, k0 + g / 16u, tl.row0 + (g % 16u) * 4u, tl.k, tl.m, full);
    } else {
        a_tile[g] = load_a4(tl.a_base, tl.row0 + g / 8u, k0 + (g % 8u) * 4u, tl.m, tl.k, full);
    }
    if (tb) {
        let c = g / 8u;
        b_tile[c * 8u + ((g % 8u) ^ ((c / 4u) % 8u))] =
            load_b4(tl.b_base, tl.col0 + c, k0 + (g % 8u) * 4u, tl.n, tl.k, full);
    } else {
        b_tile[g] = load_b4(tl.b_base, k0 + g / 16u, tl.col0 + (g % 16u) * 4u, tl.k, tl.n, full);
    }
}

// op(A) at rows 4 rq .. + 3, k 4 kq .. + 3 of the slab: column kk holds k 4 kq + kk.
fn a_block(ta: bool, rq: u32, kq: u32) -> mat4x4<f32> {
    if (ta) {
        let s = 64u * kq + rq;
        return mat4x4<f32>(a_tile[s], a_tile[s + 16u], a_tile[s + 32u], a_tile[s + 48u]);
    }
    let s = 32u * rq + kq;
    return transpose(mat4x4<f32>(a_tile[s], a_tile[s + 8u], a_tile[s + 16u], a_tile[s + 24u]));
}

// op(B) at k 4 kq .. + 3 of the slab, columns 4 cq .. + 3: column j holds column 4 cq + j.
fn b_block(tb: bool, cq: u32, kq: u32) -> mat4x4<f32> {
    if (tb) {
        let s = 32u * cq + (kq ^ (cq % 8u));
        return mat4x4<f32>(b_tile[s], b_tile[s + 8u], b_tile[s + 16u], b_tile[s + 24u]);
    }
    let s = 64u * kq + cq;
    return transpose(mat4x4<f32>(b_tile[s], b_tile[s + 16u], b_tile[s + 32u], b_tile[s + 48u]));
}

// C[row][col] = alpha v + beta C[row][col] where the element lies inside C.
fn store1(tl: Tile, c_base: u32, row: u32, col: u32, v: f32) {
    if (row < tl.m && col < tl.n) {
        let idx = c_base + row * pu(5u) + col;
        // beta = 0 writes C without reading it, so a NaN already there is dropped.
        if (pf(13u) == 0.0) {
            c[idx] = pf(12u) * v;
        } else {
            c[idx] = pf(12u) * v + pf(13u) * c[idx];
        }
    }
}

// Writes block acc (acc[j][i] = C[row0 + i][col0 + j]). Unrolled: on lavapipe, loops that
// invocations leave at different points cost more than the stores themselves.
fn store_block(tl: Tile, c_base: u32, row0: u32, col0: u32, acc: mat4x4<f32>) {
    store1(tl, c_base, row0 + 0u, col0 + 0u, acc[0][0]);
    store1(tl, c_base, row0 + 0u, col0 + 1u, acc[1][0]);
    store1(tl, c_base, row0 + 0u, col0 + 2u, acc[2][0]);
    store1(tl, c_base, row0 + 0u, col0 + 3u, acc[3][0]);
    store1(tl, c_base, row0 + 1u, col0 + 0u, acc[0][1]);
    store1(tl, c_base, row0 + 1u, col0 + 1u, acc[1][1]);
    store1(tl, c_base, row0 + 1u, col0 + 2u, acc[2][1]);
    store1(tl, c_base, row0 + 1u, col0 + 3u, acc[3][1]);
    store1(tl, c_base, row0 + 2u, col0 + 0u, acc[0][2]);
    store1(tl, c_base, row0 + 2u, col0 + 1u, acc[1][2]);
    store1(tl, c_base, row0 + 2u, col0 + 2u, acc[2][2]);
    store1(tl, c_base, row0 + 2u, col0 + 3u, acc[3][2]);
    store1(tl, c_base, row0 + 3u, col0 + 0u, acc[0][3]);
    store1(tl, c_base, row0 + 3u, col0 + 1u, acc[1][3]);
    store1(tl, c_base, row0 + 3u, col0 + 2u, acc[2][3]);
    store1(tl, c_base, row0 + 3u, col0 + 3u, acc[3][3]);
}

fn gemm_tile(ta: bool, tb: bool, wid: vec3<u32>, t: u32) {
    let batch = pu(14u) + wid.z;
    var tl: Tile;
    tl.m = pu(0u);
    tl.n = pu(1u);
    tl.k = pu(2u);
    tl.row0 = (pu(15u) + wid.y) * TILE;
    tl.col0 = (pu(16u) + wid.x) * TILE;
    tl.a_base = pu(6u) + batch * pu(9u);
    tl.b_base = pu(7u) + batch * pu(10u);
    let tx = t % 8u;
    let ty = t / 8u;
    // Whole tiles need no bounds test on their loads.
    let full_mn = tl.row0 + TILE <= tl.m && tl.col0 + TILE <= tl.n;

    // Separate variables, not an array: lavapipe would address an array per invocation.
    var c00 = mat4x4<f32>();
    var c01 = mat4x4<f32>();
    var c10 = mat4x4<f32>();
    var c11 = mat4x4<f32>();
    for (var k0 = 0u; k0 < tl.k; k0 = k0 + SLAB) {
        let full = full_mn && k0 + SLAB <= tl.k;
        for (var q = 0u; q < SLAB_VECS / 64u; q = q + 1u) {
            stage(ta, tb, tl, k0, t + 64u * q, full);
        }
        workgroupBarrier();
        for (var kq = 0u; kq < SLAB / 4u; kq = kq + 1u) {
            let a0 = a_block(ta, ty, kq);
            let a1 = a_block(ta, ty + 8u, kq);
            let b0 = b_block(tb, tx, kq);
            let b1 = b_block(tb, tx + 8u, kq);
            c00 = c00 + a0 * b0;
            c01 = c01 + a0 * b1;
            c10 = c10 + a1 * b0;
            c11 = c11 + a1 * b1;
        }
        workgroupBarrier();
    }

    let c_base = pu(8u) + batch * pu(11u);
    let r0 = tl.row0 + 4u * ty;
    let q0 = tl.col0 + 4u * tx;
    store_block(tl, c_base, r0, q0, c00);
    store_block(tl, c_base, r0, q0 + 32u, c01);
    store_block(tl, c_base, r0 + 32u, q0, c10);
    store_block(tl, c_base, r0 + 32u, q0 + 32u, c11);
}

@compute @workgroup_size(64)
fn gemm_nn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    gemm_tile(false, false, wid, t);
}

@compute @workgroup_size(64)
fn gemm_nt(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    gemm_tile(false, true, wid, t);
}

@compute @workgroup_size(64)
fn gemm_tn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    gemm_tile(true, false, wid, t);
}

@compute @workgroup_size(64)
fn gemm_tt(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    gemm_tile(true, true, wid, t);
}
