//! The network's view of a digit: shared by the firmware and by `build.rs`, which pretrains
//! the frozen prefix on the host with the same inputs.

/// Image side: the digits are used at their native 8x8 (no upsampling).
pub const SIDE: usize = 8;
pub const PIXELS: usize = SIDE * SIDE;
/// Values per view: gray replicated into the network's 3 input channels.
pub const VIEW_LEN: usize = 3 * PIXELS;

/// Pixel values are counts of set pixels in a 4x4 block: 0..=16.
const MAX_VALUE: f32 = 16.0;
/// The runtime's per-channel normalisation (ImageNet mean and std).
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Writes a view of `image` (64 bytes, row-major; missing bytes read as 0) into `out`,
/// channel-major: the digit translated by `(dx, dy)` pixels with zero fill, scaled to [0, 1]
/// and normalised.
pub fn write_view(image: &[u8], dx: isize, dy: isize, out: &mut [f32; VIEW_LEN]) {
    let side = SIDE as isize;
    for y in 0..side {
        for x in 0..side {
            let (sx, sy) = (x - dx, y - dy);
            let inside = (0..side).contains(&sx) && (0..side).contains(&sy);
            let v = if inside {
                image.get((sy * side + sx) as usize).copied().unwrap_or(0) as f32 / MAX_VALUE
            } else {
                0.0
            };
            let at = (y * side + x) as usize;
            for (c, channel) in out.chunks_exact_mut(PIXELS).enumerate() {
                channel[at] = (v - MEAN[c]) / STD[c];
            }
        }
    }
}
