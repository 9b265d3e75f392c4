//! The long-tailed digits subset compiled into the image, its sampling order and its views.
//!
//! Data: UCI Machine Learning Repository, "Optical Recognition of Handwritten Digits"
//! (E. Alpaydin, C. Kaynak, 1998), the 1,797-image copy in `runtime/data/uci-digits/`
//! (CC BY 4.0; see its README). `build.rs` selects the subset: the runtime's train split made
//! long-tailed with imbalance 10, that is what `runtime run` trains on by default.

use crate::rng::SplitMix64;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/digits_lt.rs"));
}
pub use generated::{CLASS_COUNTS, COUNT, IMBALANCE};

/// Attribution the dataset's licence asks for; the firmware prints it.
pub const ATTRIBUTION: &str = "UCI Optical Recognition of Handwritten Digits (E. Alpaydin, \
    C. Kaynak, 1998), CC BY 4.0, via runtime/data/uci-digits";

pub use crate::view::{PIXELS, SIDE, VIEW_LEN};
pub const CLASSES: usize = 10;

static IMAGES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/digits-lt-images.u8"));
static LABELS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/digits-lt-labels.u8"));

const _: () = assert!(IMAGES.len() == COUNT * PIXELS && LABELS.len() == COUNT);
const _: () = assert!(COUNT <= u16::MAX as usize);

/// Label of image `i` (`i < COUNT`; 0 otherwise, never read past the end).
pub fn label(i: usize) -> u32 {
    LABELS.get(i).copied().unwrap_or(0) as u32
}

/// Writes a view of image `i` into `out`: see [`crate::view::write_view`].
pub fn write_view(i: usize, dx: isize, dy: isize, out: &mut [f32; VIEW_LEN]) {
    let image = IMAGES.get(i * PIXELS..(i + 1) * PIXELS).unwrap_or(&[]);
    crate::view::write_view(image, dx, dy, out);
}

/// Random-order epochs over the subset (instance-balanced sampling, as stage 1 of DSCL).
pub struct Sampler {
    order: [u16; COUNT],
    next: usize,
    epoch: usize,
}

impl Sampler {
    pub fn new(rng: &mut SplitMix64) -> Self {
        let mut s = Sampler {
            order: [0; COUNT],
            next: 0,
            epoch: 0,
        };
        for (i, o) in s.order.iter_mut().enumerate() {
            *o = i as u16;
        }
        s.shuffle(rng);
        s
    }

    fn shuffle(&mut self, rng: &mut SplitMix64) {
        for i in (1..COUNT).rev() {
            self.order.swap(i, rng.below(i + 1));
        }
    }

    /// The next image index; a new shuffled epoch starts when one is used up.
    pub fn next(&mut self, rng: &mut SplitMix64) -> usize {
        if self.next == COUNT {
            self.shuffle(rng);
            self.next = 0;
            self.epoch += 1;
        }
        let i = self.order[self.next] as usize;
        self.next += 1;
        i
    }

    /// Epochs completed, plus the fraction of the current one.
    pub fn epochs(&self) -> f64 {
        self.epoch as f64 + self.next as f64 / COUNT as f64
    }
}
