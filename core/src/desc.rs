//! Shape descriptors of the Backend kernels, with the buffer sizes each needs.
//!
//! Every backend validates its arguments through these (`check` methods) before launching, so
//! shape errors are the same, with the same messages, on every device.
//! Layouts are row-major; images are NCHW; convolution weights are `[out, in, kh, kw]`.
//!
//! Each descriptor is declared in its kernel family's file of [`crate::backend`], beside the
//! family's trait; this module gathers them under one path.

pub use crate::backend::batch_norm::{BatchNormShape, BnBackward, BnInference, BnTrain, GroupSpan};
pub use crate::backend::conv::Conv2dShape;
pub use crate::backend::dense::{GemmDesc, MatrixLayout};
pub use crate::backend::optim::SgdParams;
pub use crate::backend::pool::{check_global_pool, PoolShape};
pub use crate::backend::roi_align::RoiAlignShape;
pub use crate::backend::rows::{ContrastiveRowsDesc, PositiveWeighting, RowsDesc};
