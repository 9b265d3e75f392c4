// ROI-align (torchvision semantics) shared by the forward and backward modules, which append
// their bindings 0 and 2. Words: pu(0) = work items, pu(1) = batch, pu(2) = channels,
// pu(3) = height, pu(4) = width, pu(5) = boxes, pu(6) = pooled_h, pu(7) = pooled_w,
// pf(8) = spatial_scale, pu(9) = sampling_ratio (0 = adaptive; capped like the grid),
// pu(10) = 1 when aligned.
//
// Tensors larger than one binding are bound in runs: work item i of a dispatch is item
// i of box run starting at box pu(11), whose outputs start at element pu(12) of the output
// window; the feature window holds images pu(13) .. pu(13) + pu(14), starting at its element
// pu(15). A box whose image lies outside that run is left to the dispatch whose run holds it.
//
// Geometry is in f32 (WGSL has no f64), in torchvision's expression order; the suite keeps
// its boxes away from the points where a 1-ulp difference changes the sampling grid.

@group(0) @binding(1) var<storage, read> boxes: array<f32>;

// Sampling points per bin per axis are capped, as in the CPU backend, so an absurd box
// cannot make an invocation loop for hours.
const MAX_GRID: u32 = 65536u;

struct Roi {
    valid: bool,
    batch: u32,
    start_h: f32,
    start_w: f32,
    bin_h: f32,
    bin_w: f32,
    grid_h: u32,
    grid_w: u32,
    // Samples per bin, at least 1.
    count: f32,
}

// Box r's batch index (x) and whether it is valid (y = 1); when invalid, x is the value the
// fault reports: the truncated index, or u32::MAX for a NaN, a negative one or one past 2^32.
fn roi_batch(r: u32) -> vec2<u32> {
    // (r counts boxes in the whole tensor.)
    let v = boxes[r * 5u];
    if (!is_finite(v) || v <= -1.0) { return vec2<u32>(0xffffffffu, 0u); }
    // Truncation toward zero, as torchvision's int cast; -0.x becomes 0.
    let t = trunc(v);
    if (t >= 4294967296.0) { return vec2<u32>(0xffffffffu, 0u); }
    let i = u32(max(t, 0.0));
    return vec2<u32>(i, select(0u, 1u, i < pu(1u)));
}

fn grid_size(size: f32, bins: u32) -> u32 {
    if (pu(9u) > 0u) { return pu(9u); }
    let points = ceil(size / f32(bins));
    if (!is_finite(points)) {
        // +inf saturates; NaN (a non-finite box) gets no samples.
        return select(0u, MAX_GRID, points > 0.0);
    }
    if (points >= 1.0) { return u32(min(points, f32(MAX_GRID))); }
    return 0u;
}

fn decode(r: u32) -> Roi {
    var roi: Roi;
    let b = roi_batch(r);
    roi.valid = b.y == 1u;
    roi.batch = b.x;
    let offset = select(0.0, 0.5, pu(10u) == 1u);
    let scale = pf(8u);
    let o = r * 5u;
    let start_w = boxes[o + 1u] * scale - offset;
    let start_h = boxes[o + 2u] * scale - offset;
    let end_w = boxes[o + 3u] * scale - offset;
    let end_h = boxes[o + 4u] * scale - offset;
    var roi_w = end_w - start_w;
    var roi_h = end_h - start_h;
    if (pu(10u) == 0u) {
        // As torchvision's std::max: a NaN size stays NaN.
        roi_w = select(roi_w, 1.0, roi_w < 1.0);
        roi_h = select(roi_h, 1.0, roi_h < 1.0);
    }
    roi.start_h = start_h;
    roi.start_w = start_w;
    roi.bin_h = roi_h / f32(pu(6u));
    roi.bin_w = roi_w / f32(pu(7u));
    roi.grid_h = grid_size(roi_h, pu(6u));
    roi.grid_w = grid_size(roi_w, pu(7u));
    roi.count = max(f32(roi.grid_h) * f32(roi.grid_w), 1.0);
    return roi;
}

struct Taps {
    ok: bool,
    at: vec4<u32>,
    w: vec4<f32>,
}

struct Axis {
    low: u32,
    high: u32,
    // Fractional distance from the low tap.
    frac: f32,
}

// The taps along one axis of a coordinate already known to lie in [-1, size].
fn axis(v: f32, size: u32) -> Axis {
    let c = max(v, 0.0);
    let low = u32(c);
    if (low >= size - 1u) { return Axis(size - 1u, size - 1u, 0.0); }
    return Axis(low, low + 1u, c - f32(low));
}

// torchvision's bilinear_interpolate: nothing beyond [-1, size] on either axis (nor at a
// non-finite coordinate); [-1, 0] clamps to 0; at or past the last row/column both taps
// collapse onto it.
fn taps(y: f32, x: f32) -> Taps {
    var out: Taps;
    out.ok = false;
    let height = pu(3u);
    let width = pu(4u);
    if (height == 0u || width == 0u || !is_finite(y) || !is_finite(x)) { return out; }
    if (y < -1.0 || y > f32(height) || x < -1.0 || x > f32(width)) { return out; }
    let ya = axis(y, height);
    let xa = axis(x, width);
    let hy = 1.0 - ya.frac;
    let hx = 1.0 - xa.frac;
    let ly = ya.frac;
    let lx = xa.frac;
    let y0 = ya.low * width;
    let y1 = ya.high * width;
    out.ok = true;
    out.at = vec4<u32>(y0 + xa.low, y0 + xa.high, y1 + xa.low, y1 + xa.high);
    out.w = vec4<f32>(hy * hx, hy * lx, ly * hx, ly * lx);
    return out;
}

// Sample iy of bin row ph (or ix of bin column pw): torchvision's expression order.
fn sample_at(start: f32, bin: f32, p: u32, i: u32, grid: u32) -> f32 {
    return start + f32(p) * bin + (f32(i) + 0.5) * bin / f32(grid);
}

var<workgroup> first_bad: atomic<u32>;

// One workgroup: records LabelOutOfRange at the lowest box index whose batch index is
// invalid, so the report does not depend on which invocation got there first.
@compute @workgroup_size(256)
fn roi_check(@builtin(local_invocation_index) t: u32) {
    if (t == 0u) { atomicStore(&first_bad, 0xffffffffu); }
    workgroupBarrier();
    for (var r = t; r < pu(5u); r = r + 256u) {
        if (roi_batch(r).y == 0u) {
            atomicMin(&first_bad, r);
            break;
        }
    }
    workgroupBarrier();
    if (t == 0u) {
        let r = atomicLoad(&first_bad);
        if (r != 0xffffffffu) { record_fault(FAULT_LABEL_OUT_OF_RANGE, r, roi_batch(r).x); }
    }
}

// Item i of this dispatch as (box in the whole tensor, channel, bin), and whether the box's
// image lies in this dispatch's feature run (invalid boxes lie in every run).
struct Item { roi: Roi, c: u32, bin: u32, here: bool, base: u32 }

fn item(i: u32) -> Item {
    let channels = pu(2u);
    let bins = pu(6u) * pu(7u);
    let rc = i / bins;
    var it: Item;
    it.bin = i % bins;
    it.c = rc % channels;
    it.roi = decode(pu(11u) + rc / channels);
    let first_image = pu(13u);
    it.here = !it.roi.valid
        || (it.roi.batch >= first_image && it.roi.batch - first_image < pu(14u));
    it.base = pu(15u) + ((it.roi.batch - first_image) * channels + it.c) * pu(3u) * pu(4u);
    return it;
}
