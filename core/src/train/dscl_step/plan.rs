//! Planning a stage-1 step: what [`DsclStep::new`] checks of the configuration and allocates
//! once, for the step to reuse every call without allocating: the query and key passes, the
//! crop path PBSD adds (students, ROI-aligned teachers), each replica group's losses and rows,
//! the scratch sized for the largest pass, and the totals buffer the step reads back.
//!
//! Kept apart from the step's recipe so `dscl_step.rs` reads as steps 1-8 in order; the types
//! here are the step's private state, visible to its module only.

use heapless::Vec;

use crate::backend::Backend;
use crate::collective::Placement;
use crate::error::{ensure, Result};
use crate::loss::diagnose::TOTALS_LEN;
use crate::loss::L2Normalize;
use crate::loss::{ContrastiveShape, PatchSelfDistillation, SupervisedContrastive};
use crate::nn::batch_norm::StatGroups;
use crate::nn::encoder::{Encoder, EncoderRecord};
use crate::nn::head::HeadRecord;
use crate::nn::pool::GlobalAvgPool;
use crate::nn::roi_align::RoiAlign;
use crate::nn::scratch::Scratch;

use super::{ContrastiveLoss, CropNorm, DsclConfig, DsclStep, StepShape, MAX_REPLICAS};

/// What PBSD adds: the crops' pass and the teachers.
pub(super) struct CropPath<B: Backend> {
    pub(super) students: EncoderRecord<B>,
    pub(super) roi: RoiAlign,
    pub(super) roi_out: B::Buffer,
    pub(super) roi_pool: GlobalAvgPool,
    pub(super) teacher_pooled: B::Buffer,
    pub(super) teacher_head: HeadRecord<B>,
    pub(super) teacher_norm: L2Normalize<B>,
    pub(super) teachers: B::Buffer,
    pub(super) d_students: B::Buffer,
    pub(super) frozen_teachers: bool,
}

/// One replica group's losses; with R > 1 also its rows, gathered from the step's buffers
/// before its losses and its gradients scattered back after.
pub(super) struct ReplicaGroup<B: Backend> {
    pub(super) contrastive: SupervisedContrastive<B>,
    pub(super) pbsd: Option<PatchSelfDistillation<B>>,
    pub(super) rows: Option<GroupRows<B>>,
}

pub(super) struct GroupRows<B: Backend> {
    pub(super) queries: B::Buffer,
    pub(super) keys: B::Buffer,
    pub(super) labels: B::IndexBuffer,
    pub(super) d_queries: B::Buffer,
    /// `[C * b, d]` crop-major within the group (PBSD only, else empty).
    pub(super) teachers: B::Buffer,
    pub(super) students: B::Buffer,
    pub(super) d_students: B::Buffer,
}

/// What a rank of a run of several processes adds: the whole batch's keys and labels, gathered
/// from every rank, and its own group's keys among them.
pub(super) struct Across<B: Backend> {
    pub(super) placement: Placement,
    /// `[B, d]`: every rank's keys in slot order (the key shuffle's, when there is one).
    pub(super) slots: B::Buffer,
    /// `[B]`: every rank's labels, in image order.
    pub(super) labels: B::IndexBuffer,
    /// `[B / R, d]`: this rank's images' keys, in image order (its losses' positives).
    pub(super) own_keys: B::Buffer,
}

impl ContrastiveLoss {
    /// The loss planned for `shape` at `temperature`.
    pub fn plan<B: Backend>(
        self,
        backend: &B,
        shape: ContrastiveShape,
        temperature: f64,
    ) -> Result<SupervisedContrastive<B>> {
        match self {
            ContrastiveLoss::Dscl { beta } => {
                SupervisedContrastive::dscl(backend, shape, temperature, beta)
            }
            ContrastiveLoss::SupCon => SupervisedContrastive::supcon(backend, shape, temperature),
        }
    }
}

impl<B: Backend> DsclStep<B> {
    /// The step of a one-process run: every replica group on this device.
    pub fn new(
        backend: &B,
        encoder: &Encoder,
        config: DsclConfig,
        shape: StepShape,
    ) -> Result<Self> {
        Self::placed(backend, encoder, config, shape, Placement::SOLO)
    }

    /// The step of rank `placement.rank` of a run of `placement.world` processes: with more
    /// than one, each process runs one replica group (`config.replicas` must equal the world
    /// size) on its `shape.batch / world` images, and [`DsclStep::step_across`] exchanges the
    /// rest through a [`crate::Collective`] of that placement.
    pub fn placed(
        backend: &B,
        encoder: &Encoder,
        config: DsclConfig,
        shape: StepShape,
        placement: Placement,
    ) -> Result<Self> {
        placement.check()?;
        ensure(shape.batch >= 1, "batch", "must be at least 1")?;
        ensure(
            config.pbsd_weight.is_finite() && config.pbsd_weight >= 0.0,
            "pbsd weight",
            "must be finite and non-negative",
        )?;
        ensure(
            (0.0..=1.0).contains(&config.key_momentum),
            "key momentum",
            "must lie in [0, 1]",
        )?;
        let replicas = config.replicas;
        ensure(
            (1..=MAX_REPLICAS).contains(&replicas),
            "replicas",
            "must be between 1 and 64",
        )?;
        ensure(
            shape.batch.is_multiple_of(replicas),
            "batch",
            "must be a multiple of the replica count (each replica group takes batch / replicas images)",
        )?;
        let world = placement.world;
        ensure(
            world == 1 || replicas == world,
            "replicas",
            "must equal the number of processes: each process runs one replica group",
        )?;
        let big_b = shape.batch;
        // This process's images and replica groups.
        let (rows, groups_here) = (big_b / world, replicas / world);
        let b = big_b / replicas;
        let dim = encoder.embedding_dim();
        let loss_shape = ContrastiveShape {
            batch: b,
            dim,
            queue_len: config.queue_len,
            num_classes: shape.num_classes,
        };
        let replica_groups = StatGroups {
            groups: groups_here,
            running_every: groups_here,
        };
        let full_size_pass = || {
            encoder.plan_grouped(
                backend,
                rows,
                shape.image_size,
                shape.image_size,
                replica_groups,
            )
        };
        let (query, key) = (full_size_pass()?, full_size_pass()?);
        let mut needs = encoder.needs(backend, &query);
        let pbsd_on = config.pbsd_weight > 0.0;
        let crop = if pbsd_on {
            ensure(
                config.crops >= 1,
                "crops",
                "must be at least 1 when PBSD is on",
            )?;
            let crop_groups = match config.crop_norm {
                CropNorm::PerSet => StatGroups {
                    groups: config.crops * groups_here,
                    running_every: groups_here,
                },
                CropNorm::Joint => {
                    ensure(
                        replicas == 1,
                        "crop batch norm",
                        "the joint crop pass is defined for one replica only; use per-set",
                    )?;
                    StatGroups::WHOLE
                }
            };
            let n = config.crops * rows;
            let students =
                encoder.plan_grouped(backend, n, shape.crop_size, shape.crop_size, crop_groups)?;
            needs = needs.max(encoder.needs(backend, &students));
            let (channels, h, w) = query.backbone.feature_dims();
            let roi = RoiAlign::new(rows, channels, h, w, n, encoder.backbone.config.stride())?;
            Some(CropPath {
                students,
                roi_out: backend.alloc(roi.shape.output_len())?,
                roi,
                roi_pool: GlobalAvgPool {
                    batch: n,
                    channels,
                    spatial: 4,
                },
                teacher_pooled: backend.alloc(n * channels)?,
                teacher_head: encoder.head.plan(backend, n)?,
                teacher_norm: L2Normalize::new(backend, n, dim)?,
                teachers: backend.alloc(n * dim)?,
                d_students: backend.alloc(n * dim)?,
                frozen_teachers: false,
            })
        } else {
            None
        };
        let mut groups = Vec::new();
        for _ in 0..groups_here {
            let contrastive = config.loss.plan(backend, loss_shape, config.temperature)?;
            let pbsd = if pbsd_on {
                Some(PatchSelfDistillation::new(
                    backend,
                    loss_shape,
                    config.crops,
                    config.temperature,
                )?)
            } else {
                None
            };
            let crop_rows = if pbsd_on { config.crops * b * dim } else { 0 };
            let rows = if groups_here > 1 {
                Some(GroupRows {
                    queries: backend.alloc(b * dim)?,
                    keys: backend.alloc(b * dim)?,
                    labels: backend.alloc_index(b)?,
                    d_queries: backend.alloc(b * dim)?,
                    teachers: backend.alloc(crop_rows)?,
                    students: backend.alloc(crop_rows)?,
                    d_students: backend.alloc(crop_rows)?,
                })
            } else {
                None
            };
            // Capacity is MAX_REPLICAS, checked above.
            let _ = groups.push(ReplicaGroup {
                contrastive,
                pbsd,
                rows,
            });
        }
        let keys_in_order = if replicas > 1 {
            Some(backend.alloc(big_b * dim)?)
        } else {
            None
        };
        let across = if world > 1 {
            Some(Across {
                placement,
                slots: backend.alloc(big_b * dim)?,
                labels: backend.alloc_index(big_b)?,
                own_keys: backend.alloc(rows * dim)?,
            })
        } else {
            None
        };
        Ok(DsclStep {
            config,
            shape,
            query,
            key,
            keys_in_order,
            across,
            crop,
            scratch: Scratch::new(backend, needs)?,
            groups,
            d_queries: backend.alloc(rows * dim)?,
            totals: backend.alloc(2 * TOTALS_LEN * groups_here)?,
        })
    }
}
