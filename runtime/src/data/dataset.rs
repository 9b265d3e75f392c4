//! The interface every data set offers to samplers and the loader.

use crate::image::Image;

/// A labelled image data set.
///
/// Labels are kept in memory and available without decoding anything, because samplers
/// (class-balanced sampling, long-tailed subsampling, per-class counts) need all of them
/// before the first image is read. Images are decoded on demand by [`Dataset::load`], from
/// worker threads, hence `Send + Sync`.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether the data set has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of classes; every label is below it. It can exceed the largest label + 1 (a
    /// class with no sample in this split still counts).
    fn num_classes(&self) -> usize;

    /// All labels, in sample order, without decoding any image.
    fn labels(&self) -> &[u32];

    /// The label of sample `i` (`i < len()`).
    fn label(&self, i: usize) -> u32 {
        self.labels()[i]
    }

    /// Decodes sample `i` into a 3-channel image with values in [0, 1]. Errors name the file
    /// (or record) that failed.
    fn load(&self, i: usize) -> anyhow::Result<Image>;

    /// Where sample `i` comes from (a file path, a list-file line, a record index), for error
    /// messages and skip reports.
    fn describe(&self, i: usize) -> String;
}
