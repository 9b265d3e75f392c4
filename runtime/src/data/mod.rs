//! Data sets and loading: everything between files on disk and a batch of decoded, augmented
//! samples.
//!
//! The pieces, one per file:
//! - [`Dataset`]: the trait every data set implements (labels without decoding, decode on
//!   demand, a description of each sample for error messages).
//! - Data sets: [`ListFile`] (`relative/path label` lines), [`ImageNetLtJson`] (the official
//!   ImageNet-LT annotation JSON), [`ImageFolder`] (one subdirectory per class),
//!   [`CifarBinary`] (CIFAR-10/100 binary batches), [`Digits`] (the embedded UCI 8x8 digits).
//! - [`long_tailed_indices`] and [`Subset`]: the exponential long-tailed subsampling used for
//!   CIFAR-LT and the built-in digits.
//! - [`Image`]: a decoded image as loading, augmentation and the model pass it on;
//!   [`decode_image_file`]: PNG/JPEG decoding into one.
//! - [`epoch_order`], [`class_balanced_order`]: the sample orders of stage 1 (instance
//!   sampling) and stage 2 (class-balanced sampling).
//! - [`Loader`]: parallel decoding and augmentation with a bounded prefetch queue, delivering
//!   batches in order and deterministically for a given seed.
//! - [`open_train`], [`open_test`]: the training and test sets a run's configuration names,
//!   checked before any work.

mod cifar;
mod dataset;
mod decode;
mod digits;
mod image;
mod image_folder;
mod imagenet_lt;
mod list_file;
mod loader;
mod long_tail;
mod open;
mod path_table;
mod sampler;
mod seeding;
mod split;
mod subset;

pub use cifar::{CifarBinary, CifarKind};
pub(crate) use dataset::label_range;
pub use dataset::{Dataset, MAX_CLASSES};
pub use decode::{decode_image_bytes, decode_image_file};
pub use digits::Digits;
pub use image::Image;
pub use image_folder::ImageFolder;
pub use imagenet_lt::ImageNetLtJson;
pub use list_file::ListFile;
pub use loader::{Batch, Loader, LoaderConfig, Needed, Transform};
pub use long_tail::{long_tailed_counts, long_tailed_indices};
pub use open::{
    check_train_classes, class_counts, open_test, open_test_with_classes, open_train, workers,
};
pub(crate) use path_table::shown;
pub use sampler::{class_balanced_order, epoch_order, key_shuffle};
pub use seeding::{epoch_seed, sample_rng};
pub use split::Split;
pub use subset::Subset;
