// gemm.wgsl's operands as f32 arrays: any offset and leading dimension, and no need for the
// last element's vec4 to lie inside the buffer.

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;

fn load_a4(base: u32, major: u32, minor: u32, major_lim: u32, minor_lim: u32, full: bool) -> vec4<f32> {
    let p = base + major * pu(3u) + minor;
    let ok = inside4(major, minor, major_lim, minor_lim, full);
    var v = vec4<f32>(0.0);
    if (ok.x) { v.x = a[p]; }
    if (ok.y) { v.y = a[p + 1u]; }
    if (ok.z) { v.z = a[p + 2u]; }
    if (ok.w) { v.w = a[p + 3u]; }
    return v;
}

fn load_b4(base: u32, major: u32, minor: u32, major_lim: u32, minor_lim: u32, full: bool) -> vec4<f32> {
    let p = base + major * pu(4u) + minor;
    let ok = inside4(major, minor, major_lim, minor_lim, full);
    var v = vec4<f32>(0.0);
    if (ok.x) { v.x = b[p]; }
    if (ok.y) { v.y = b[p + 1u]; }
    if (ok.z) { v.z = b[p + 2u]; }
    if (ok.w) { v.w = b[p + 3u]; }
    return v;
}
