//! The interface every data set offers to samplers and the loader.

use super::Image;

/// The most classes a data set may have; every label is below it. Labels size allocations
/// (per-class counts, metrics, the classifier's weights), so a label is checked against this
/// before anything is sized by it: a typo or a corrupt file naming label 4000000000 must be an
/// error, not a 32 GB count array. The largest public label sets have tens of thousands of
/// classes (ImageNet-21k 21841, iNaturalist 10000), and a million classes already means 8 GB
/// of ResNet-50 classifier weights alone, so no real data set reaches it.
pub const MAX_CLASSES: usize = 1_000_000;

/// The labels of `n` classes as the user reads them: "labels 0 to 9".
pub(crate) fn label_range(n: usize) -> String {
    match n {
        0 => "no labels".to_owned(),
        1 => "label 0 only".to_owned(),
        n => format!("labels 0 to {}", n - 1),
    }
}

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
