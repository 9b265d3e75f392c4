//! The conformance suite: every [`dscl_core::Backend`] method against the f64 oracle.
//!
//! [`run_all`] runs every family; [`Conformance`] runs them one at a time (one `#[test]` each,
//! so failures are precise and the families run in parallel).

mod activations;
mod batch_norm;
mod conv;
mod dense;
mod elementwise;
mod faults;
mod losses;
mod memory;
mod optim;
mod roi_align;
mod rows;
mod shape_errors;

use crate::harness::{Config, Factory, FamilyReport, Report};
use std::cell::RefCell;

/// The names of the families, in [`Conformance::run_all`] order.
pub const FAMILIES: &[&str] = &[
    "memory",
    "elementwise",
    "gemm",
    "bias",
    "conv2d",
    "batch_norm",
    "relu",
    "pooling",
    "roi_align",
    "l2_normalize",
    "row_softmax",
    "contrastive",
    "cross_entropy",
    "optim",
    "faults",
    "shape_errors",
];

/// One `#[test]` per family (the [`FAMILIES`] list), each running that family of `$suite`: an
/// expression giving `Option<Conformance<_>>`, where `None` means the backend is absent and the
/// expression has already said why (the test then passes without running).
#[macro_export]
macro_rules! conformance_tests {
    ($suite:expr) => {
        $crate::conformance_tests!(@each $suite;
            memory, elementwise, gemm, bias, conv2d, batch_norm, relu, pooling, roi_align,
            l2_normalize, row_softmax, contrastive, cross_entropy, optim, faults, shape_errors);
    };
    (@each $suite:expr; $($family:ident),*) => {
        $(
            #[test]
            fn $family() {
                if let Some(suite) = $suite {
                    println!("{}", suite.$family());
                }
            }
        )*
    };
}

/// The suite over the backends `make` builds (a fresh one per case).
pub struct Conformance<F> {
    make: RefCell<F>,
    cfg: Config,
}

impl<F: Factory> Conformance<F> {
    /// The suite with [`Config::from_env`].
    pub fn new(make: F) -> Self {
        Conformance {
            make: RefCell::new(make),
            cfg: Config::from_env(),
        }
    }

    pub fn with_config(make: F, cfg: Config) -> Self {
        Conformance {
            make: RefCell::new(make),
            cfg,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// alloc (zero-filled), upload/download with offsets, index buffers, copy_index.
    pub fn memory(&self) -> FamilyReport {
        memory::run(&self.cfg, &self.make)
    }
    /// fill, copy, scale, axpy, add, sum.
    pub fn elementwise(&self) -> FamilyReport {
        elementwise::run(&self.cfg, &self.make)
    }
    /// gemm: transposes, alpha/beta (beta = 0 over NaN), ld > cols, offsets, strided batches.
    pub fn gemm(&self) -> FamilyReport {
        dense::gemm(&self.cfg, &self.make)
    }
    /// bias_add, bias_backward (accumulating).
    pub fn bias(&self) -> FamilyReport {
        dense::bias(&self.cfg, &self.make)
    }
    /// conv2d forward, backward-data, backward-filter (accumulating).
    pub fn conv2d(&self) -> FamilyReport {
        conv::run(&self.cfg, &self.make)
    }
    /// Batch norm: training forward with running statistics, inference, backward.
    pub fn batch_norm(&self) -> FamilyReport {
        batch_norm::run(&self.cfg, &self.make)
    }
    /// relu forward and backward.
    pub fn relu(&self) -> FamilyReport {
        activations::relu(&self.cfg, &self.make)
    }
    /// max_pool2d and global average pooling, forward and backward.
    pub fn pooling(&self) -> FamilyReport {
        activations::pooling(&self.cfg, &self.make)
    }
    /// roi_align forward and backward (accumulating).
    pub fn roi_align(&self) -> FamilyReport {
        roi_align::run(&self.cfg, &self.make)
    }
    /// l2_normalize forward and backward.
    pub fn l2_normalize(&self) -> FamilyReport {
        rows::l2_normalize(&self.cfg, &self.make)
    }
    /// row_softmax and row_logsumexp with masked columns.
    pub fn row_softmax(&self) -> FamilyReport {
        rows::softmax(&self.cfg, &self.make)
    }
    /// contrastive_rows (SupCon and DSCL).
    pub fn contrastive(&self) -> FamilyReport {
        losses::contrastive(&self.cfg, &self.make)
    }
    /// soft_cross_entropy and softmax_cross_entropy.
    pub fn cross_entropy(&self) -> FamilyReport {
        losses::cross_entropy(&self.cfg, &self.make)
    }
    /// sgd_momentum_update and ema_update.
    pub fn optim(&self) -> FamilyReport {
        optim::run(&self.cfg, &self.make)
    }
    /// The fault slot: recorded kinds and indices, first fault wins, take_fault clears.
    pub fn faults(&self) -> FamilyReport {
        faults::run(&self.cfg, &self.make)
    }
    /// Too-short buffers return `Err(ShapeMismatch)` (and bad arguments `InvalidArgument`)
    /// without panicking, for every method.
    pub fn shape_errors(&self) -> FamilyReport {
        shape_errors::run(&self.cfg, &self.make)
    }

    /// One family by name (see [`FAMILIES`]).
    pub fn family(&self, name: &str) -> FamilyReport {
        match name {
            "memory" => self.memory(),
            "elementwise" => self.elementwise(),
            "gemm" => self.gemm(),
            "bias" => self.bias(),
            "conv2d" => self.conv2d(),
            "batch_norm" => self.batch_norm(),
            "relu" => self.relu(),
            "pooling" => self.pooling(),
            "roi_align" => self.roi_align(),
            "l2_normalize" => self.l2_normalize(),
            "row_softmax" => self.row_softmax(),
            "contrastive" => self.contrastive(),
            "cross_entropy" => self.cross_entropy(),
            "optim" => self.optim(),
            "faults" => self.faults(),
            "shape_errors" => self.shape_errors(),
            other => panic!("unknown conformance family {other:?}; known: {FAMILIES:?}"),
        }
    }

    /// Every family, in order; panics at the first failing one.
    pub fn run_all(&self) -> Report {
        let families: Vec<FamilyReport> = FAMILIES.iter().map(|f| self.family(f)).collect();
        Report {
            backend: families
                .first()
                .map(|f| f.backend.clone())
                .unwrap_or_default(),
            families,
        }
    }
}

/// Runs the whole suite on the backends `make` builds, with [`Config::from_env`]; returns the
/// report or panics with the first failure.
pub fn run_all<F: Factory>(make: F) -> Report {
    Conformance::new(make).run_all()
}

/// [`run_all`] with an explicit configuration (smaller shapes, more cases, looser tolerances).
pub fn run_all_with<F: Factory>(make: F, cfg: Config) -> Report {
    Conformance::with_config(make, cfg).run_all()
}
