// gemm.wgsl's operands A and B as vec4 arrays: 4 elements per load. Element p lies in vec4
// p / 4 at any offset or leading dimension, so an unaligned run of 4 is cut from two aligned
// vec4s. The host binds each operand from a 16-byte boundary through the vec4 holding its last
// element; indices are clamped to the binding, and the clamped values only ever land in lanes
// that are zeroed as outside the matrix.

@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;

// The 4 elements starting at lane s of lo, continuing into hi.
fn shift4(lo: vec4<f32>, hi: vec4<f32>, s: u32) -> vec4<f32> {
    var v = lo;
    v = select(v, vec4<f32>(lo.yzw, hi.x), s == 1u);
    v = select(v, vec4<f32>(lo.zw, hi.xy), s == 2u);
    v = select(v, vec4<f32>(lo.w, hi.xyz), s == 3u);
    return v;
}

fn load_a4(base: u32, major: u32, minor: u32, major_lim: u32, minor_lim: u32, full: bool) -> vec4<f32> {
    let p = base + major * pu(3u) + minor;
    let last = arrayLength(&a) - 1u;
    let v = shift4(a[min(p / 4u, last)], a[min(p / 4u + 1u, last)], p % 4u);
    return select(vec4<f32>(0.0), v, inside4(major, minor, major_lim, minor_lim, full));
}

fn load_b4(base: u32, major: u32, minor: u32, major_lim: u32, minor_lim: u32, full: bool) -> vec4<f32> {
    let p = base + major * pu(4u) + minor;
    let last = arrayLength(&b) - 1u;
    let v = shift4(b[min(p / 4u, last)], b[min(p / 4u + 1u, last)], p % 4u);
    return select(vec4<f32>(0.0), v, inside4(major, minor, major_lim, minor_lim, full));
}
