//! roi_align forward and backward (accumulating): random boxes (some partly outside the image,
//! some smaller than a feature cell), spatial scales 1 .. 1/32, mostly 2x2 output, sampling
//! ratio 0 (adaptive), 1 or 2, aligned false (DSCL) and true.

use super::shape_errors::{expect, shape_tools, ShapeCase, Want::Invalid, Want::Shape};
use crate::gen::Gen;
use crate::harness::{Config, Ctx, Factory, FamilyReport, OrFail, Res};
use crate::tol;
use dscl_core::backend::prelude::*;
use dscl_core::desc::RoiAlignShape;
use proptest::prelude::*;
use std::cell::RefCell;

#[derive(Clone, Debug)]
struct Case {
    shape: RoiAlignShape,
    seed: u64,
}

pub(crate) fn run<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    let strategy = (
        (
            1usize..=2,
            prop_oneof![4 => 1..=cfg.dim(4, 2), 1 => cfg.dim(16, 2)..=cfg.dim(64, 4)],
            1..=cfg.dim(12, 6),
            1..=cfg.dim(12, 6),
        ),
        (
            prop_oneof![4 => 1..=cfg.dim(6, 3), 1 => cfg.dim(8, 3)..=cfg.dim(24, 6)],
            prop_oneof![4 => Just((2usize, 2usize)), 1 => (1usize..=3, 1usize..=3)],
            prop::sample::select(vec![1.0f64, 0.5, 0.25, 0.125, 0.0625, 0.03125]),
            prop_oneof![2 => Just(0usize), 1 => Just(2usize), 1 => Just(1usize)],
            prop_oneof![3 => Just(false), 1 => Just(true)],
        ),
        any::<u64>(),
    )
        .prop_map(
            |(
                (batch, channels, height, width),
                (num_rois, (pooled_h, pooled_w), spatial_scale, sampling_ratio, aligned),
                seed,
            )| Case {
                shape: RoiAlignShape {
                    batch,
                    channels,
                    height,
                    width,
                    num_rois,
                    pooled_h,
                    pooled_w,
                    spatial_scale,
                    sampling_ratio,
                    aligned,
                },
                seed,
            },
        );
    case_fn!(Runner, Case, run_case);
    crate::harness::run_family("roi_align", cfg, make, 160, strategy, Runner)
}

/// Sample coordinates along one axis of one box, as torchvision computes them (in f64), plus
/// whether the adaptive grid size sits at an integer boundary.
fn axis_samples(
    lo: f64,
    hi: f64,
    scale: f64,
    pooled: usize,
    sampling: usize,
    aligned: bool,
) -> (Vec<f64>, bool, usize) {
    let off = if aligned { 0.5 } else { 0.0 };
    let start = lo * scale - off;
    let raw = hi * scale - off - start;
    let size = if aligned { raw } else { raw.max(1.0) };
    let bin = size / pooled as f64;
    // With aligned = false and a box clamped well below 1 cell, the size is exactly 1 on both
    // sides; otherwise the adaptive grid ceil(bin) is discontinuous at integers.
    let clamped = !aligned && raw < 1.0 - 1e-3;
    let grid = if sampling > 0 {
        sampling
    } else {
        bin.ceil().max(1.0) as usize
    };
    let risky = sampling == 0 && !clamped && (bin - bin.round()).abs() < 1e-3;
    let mut pts = Vec::new();
    for p in 0..pooled {
        for i in 0..grid {
            pts.push(start + p as f64 * bin + (i as f64 + 0.5) * bin / grid as f64);
        }
    }
    (pts, risky, grid)
}

/// True when a sample lies within 1e-3 cells of a discontinuity (-1 or `size`).
fn near_edge(pts: &[f64], size: usize) -> bool {
    pts.iter()
        .any(|&p| (p + 1.0).abs() < 1e-3 || (p - size as f64).abs() < 1e-3)
}

fn run_case<B: Backend>(ctx: &Ctx<'_, B>, case: &Case) -> Res<()> {
    let s = &case.shape;
    let mut g = Gen::new(case.seed);
    let eps = ctx.eps();
    let img_w = s.width as f64 / s.spatial_scale;
    let img_h = s.height as f64 / s.spatial_scale;
    let mut boxes = vec![0.0f32; s.boxes_len() + g.slack()];
    let mut max_samples = 1usize;
    for r in 0..s.num_rois {
        let mut tries = 0;
        loop {
            tries += 1;
            let b = g.below(s.batch) as f32;
            // Corners from 30% outside to 120% of the image, sizes from tiny to most of it.
            let x1 = g.uniform(-0.3 * img_w, 1.1 * img_w);
            let y1 = g.uniform(-0.3 * img_h, 1.1 * img_h);
            let tiny = g.chance(0.2);
            let wmax = if tiny {
                0.8 / s.spatial_scale
            } else {
                0.9 * img_w
            };
            let hmax = if tiny {
                0.8 / s.spatial_scale
            } else {
                0.9 * img_h
            };
            let x2 = x1 + g.uniform(0.0, wmax);
            let y2 = y1 + g.uniform(0.0, hmax);
            let (xs, xr, gx) = axis_samples(
                x1 as f64,
                x2 as f64,
                s.spatial_scale,
                s.pooled_w,
                s.sampling_ratio,
                s.aligned,
            );
            let (ys, yr, gy) = axis_samples(
                y1 as f64,
                y2 as f64,
                s.spatial_scale,
                s.pooled_h,
                s.sampling_ratio,
                s.aligned,
            );
            let bad = xr || yr || near_edge(&xs, s.width) || near_edge(&ys, s.height);
            if !bad || tries > 200 {
                boxes[r * 5..r * 5 + 5].copy_from_slice(&[b, x1, y1, x2, y2]);
                max_samples = max_samples.max(gx * gy);
                break;
            }
        }
    }
    let sl = g.slack();
    let feat_init = g.normal_vec(s.features_len() + sl, 1.0);
    let plane = s.height * s.width;
    // max |f| per (image, channel) plane.
    let plane_max: Vec<f64> = (0..s.batch * s.channels)
        .map(|p| {
            feat_init[p * plane..(p + 1) * plane]
                .iter()
                .fold(0.0f64, |m, v| m.max((*v as f64).abs()))
        })
        .collect();
    let k =
        tol::ROI_ALIGN * eps * (s.height.max(s.width) as f64 + (max_samples as f64).sqrt() + 2.0);

    let feats = ctx.buf(&feat_init)?;
    let bx = ctx.buf(&boxes)?;
    let on = s.output_len() + g.slack();
    let mut out = ctx.buf(&g.poison(on))?;
    ctx.be
        .roi_align_forward(s, &feats.be, &bx.be, &mut out.be)
        .or_fail("roi_align_forward")?;
    ctx.rf
        .roi_align_forward(s, &feats.rf, &bx.rf, &mut out.rf)
        .or_fail("oracle roi_align_forward")?;
    let per_roi = s.channels * s.pooled_h * s.pooled_w;
    let bins = s.pooled_h * s.pooled_w;
    let t: Vec<f64> = (0..on)
        .map(|i| {
            if i < s.output_len() {
                let r = i / per_roi;
                let c = (i % per_roi) / bins;
                let b = boxes[r * 5] as usize;
                k * plane_max[b * s.channels + c]
            } else {
                0.0
            }
        })
        .collect();
    let out_dims = [s.num_rois, s.channels, s.pooled_h, s.pooled_w];
    let desc = (case, &boxes[..s.boxes_len()]);
    ctx.check("roi_align_forward", "output", &desc, &out_dims, &out, &t)?;

    // backward: accumulates onto random values.
    let sl = g.slack();
    let go_init = g.normal_vec(s.output_len() + sl, 1.0);
    let go = ctx.buf(&go_init)?;
    let fnl = s.features_len() + g.slack();
    let gf0 = g.normal_vec(fnl, 1.0);
    let mut gf = ctx.buf(&gf0)?;
    ctx.be
        .roi_align_backward(s, &go.be, &bx.be, &mut gf.be)
        .or_fail("roi_align_backward")?;
    ctx.rf
        .roi_align_backward(s, &go.rf, &bx.rf, &mut gf.rf)
        .or_fail("oracle roi_align_backward")?;
    // Total |grad_output| reaching each (image, channel) plane.
    let mut reach = vec![0.0f64; s.batch * s.channels];
    for i in 0..s.output_len() {
        let r = i / per_roi;
        let c = (i % per_roi) / bins;
        let b = boxes[r * 5] as usize;
        reach[b * s.channels + c] += (go_init[i] as f64).abs();
    }
    let t: Vec<f64> = (0..fnl)
        .map(|i| {
            if i < s.features_len() {
                tol::ELEMENTWISE * eps * (gf0[i] as f64).abs() + k * reach[i / plane]
            } else {
                0.0
            }
        })
        .collect();
    let f_dims = [s.batch, s.channels, s.height, s.width];
    ctx.check(
        "roi_align_backward",
        "grad_features",
        &desc,
        &f_dims,
        &gf,
        &t,
    )?;
    ctx.no_faults("roi_align", case)
}

/// This family's shape errors, one of [`super::shape_errors`]'s table: each buffer one element
/// short is `ShapeMismatch`, each listed bad argument `InvalidArgument`, none a panic.
pub(crate) fn shape_errors<B: Backend>(ctx: &Ctx<'_, B>, _case: &ShapeCase) -> Res<()> {
    let (be, z, _, _) = shape_tools(ctx);
    let (px, px_s) = (z(32)?, z(31)?);
    let (mut mpx, mut mpx_s) = (z(32)?, z(31)?);
    // ---- roi align: features 1 x 2 x 4 x 4, 2 boxes, 2x2 ----
    let rs = RoiAlignShape {
        batch: 1,
        channels: 2,
        height: 4,
        width: 4,
        num_rois: 2,
        pooled_h: 2,
        pooled_w: 2,
        spatial_scale: 0.25,
        sampling_ratio: 0,
        aligned: false,
    };
    let (rb, rb_s) = (z(10)?, z(9)?);
    let (mut ro, mut ro_s) = (z(16)?, z(15)?);
    expect("roi_align_forward: features too short", Shape, || {
        be.roi_align_forward(&rs, &px_s, &rb, &mut ro)
    })?;
    expect("roi_align_forward: boxes too short", Shape, || {
        be.roi_align_forward(&rs, &px, &rb_s, &mut ro)
    })?;
    expect("roi_align_forward: output too short", Shape, || {
        be.roi_align_forward(&rs, &px, &rb, &mut ro_s)
    })?;
    let ro_in = z(16)?;
    let ro_in_s = z(15)?;
    expect("roi_align_backward: grad_output too short", Shape, || {
        be.roi_align_backward(&rs, &ro_in_s, &rb, &mut mpx)
    })?;
    expect("roi_align_backward: boxes too short", Shape, || {
        be.roi_align_backward(&rs, &ro_in, &rb_s, &mut mpx)
    })?;
    expect("roi_align_backward: grad_features too short", Shape, || {
        be.roi_align_backward(&rs, &ro_in, &rb, &mut mpx_s)
    })?;
    let zero_scale = RoiAlignShape {
        spatial_scale: 0.0,
        ..rs
    };
    expect("roi_align_forward: spatial_scale 0", Invalid, || {
        be.roi_align_forward(&zero_scale, &px, &rb, &mut ro)
    })?;
    Ok(())
}
