// Shared by the batch-norm kernels over [batch, channels, spatial]: pu(0) = channels and
// pu(1) = spatial in every one of them.

// Element e of channel c, counting from the first image bound.
fn at(c: u32, e: u32) -> u32 {
    let s = pu(1u);
    let b = e / s;
    return (b * pu(0u) + c) * s + (e - b * s);
}
