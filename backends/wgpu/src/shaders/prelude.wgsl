// Shared by every dscl kernel.
//
// Parameters arrive as 32 words of immediate data; kernels read them with `pu(i)` (u32) and
// `pf(i)` (f32 bits). Value faults go to the fault slot (group 1): the first one since the host
// last cleared it wins.

struct Immediates { w: array<vec4<u32>, 8> }
var<immediate> imm: Immediates;

fn pu(i: u32) -> u32 { return imm.w[i / 4u][i % 4u]; }
fn pf(i: u32) -> f32 { return bitcast<f32>(pu(i)); }

struct FaultSlot { flag: atomic<u32>, kind: u32, index: u32, value: u32 }
@group(1) @binding(0) var<storage, read_write> fault: FaultSlot;

const FAULT_NON_FINITE: u32 = 1u;
const FAULT_ZERO_NORM_ROW: u32 = 2u;
const FAULT_LABEL_OUT_OF_RANGE: u32 = 3u;

fn record_fault(kind: u32, index: u32, value: u32) {
    loop {
        if (atomicLoad(&fault.flag) != 0u) { return; }
        let r = atomicCompareExchangeWeak(&fault.flag, 0u, 1u);
        if (r.exchanged) {
            fault.kind = kind;
            fault.index = index;
            fault.value = value;
            return;
        }
    }
}

// WGSL has no isnan/isinf: an f32 is finite when its exponent bits are not all ones.
fn is_finite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }

// The flat index of this invocation when a 1-D grid is folded into x and y (x holds at most
// 65535 workgroups).
fn flat_index(gid: vec3<u32>, nwg: vec3<u32>, wg: u32) -> u32 {
    return gid.x + gid.y * nwg.x * wg;
}

// Kahan summation state: s holds the sum, c the low-order part lost so far (sum = s - c).
struct Kahan { s: f32, c: f32 }

fn kahan_add(k: Kahan, x: f32) -> Kahan {
    let y = x - k.c;
    let u = k.s + y;
    return Kahan(u, (u - k.s) - y);
}
