//! Host runs of the firmware's code, with the same arena backend:
//! `cargo test --lib --target x86_64-unknown-linux-gnu` (in `examples/firmware`).

use dscl_core::backend::prelude::*;
use dscl_core::nn::{ResNet, ResNetConfig, Scratch, TensorLayout, TensorSet};
use dscl_core::train::LrSchedule;
use dscl_cpu::CpuBackend;

use crate::data::Sampler;
use crate::prefix::Prefix;
use crate::rng::SplitMix64;
use crate::tune::{FineTuneStep, Model, Network, TuneConfig, ARENA_LEN, INDEX_ARENA_LEN};
use crate::view::VIEW_LEN;

/// The tiny ResNet cut after `layer2`, as the core builds it.
fn core_prefix(params: &mut TensorLayout, state: &mut TensorLayout) -> ResNet {
    let config = ResNetConfig {
        stages: 2,
        ..ResNetConfig::tiny()
    };
    ResNet::new(config, params, state).unwrap()
}

#[test]
fn prefix_is_the_tiny_resnets_first_stages() {
    let (mut p, mut s) = (TensorLayout::new(), TensorLayout::new());
    let prefix = Prefix::new(&mut p, &mut s).unwrap();
    let (mut cp, mut cs) = (TensorLayout::new(), TensorLayout::new());
    let net = core_prefix(&mut cp, &mut cs);
    for (a, b) in [(&p, &cp), (&s, &cs)] {
        let names = |l: &TensorLayout| {
            l.specs()
                .iter()
                .map(|t| (t.name.as_str().to_owned(), t.dims().to_vec()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(a), names(b));
    }

    // Same weights, same images: the prefix's features are the core ResNet's last map.
    let mut arena = vec![0.0f32; 1 << 18];
    let mut index_arena = vec![0u32; 64];
    let be = CpuBackend::from_arena(&mut arena, &mut index_arena);
    let mut rng = SplitMix64::new(3);
    let params = TensorSet::initialised(&be, &p, &mut rng).unwrap();
    let mut state = TensorSet::initialised(&be, &s, &mut rng).unwrap();
    // Running statistics away from (0, 1), so inference-mode batch norm does something.
    for (spec, buf) in s.specs().iter().zip(state.buffers_mut()) {
        let v = if spec.name.ends_with("running_var") {
            1.7
        } else {
            0.2
        };
        buf.fill(v);
    }
    let mut images = be.alloc(2 * VIEW_LEN).unwrap();
    for (k, v) in images.iter_mut().enumerate() {
        *v = ((k * 37) % 17) as f32 / 17.0 - 0.4;
    }
    let mut rec = prefix.plan(&be, 2, 8, 8).unwrap();
    let mut scratch = Scratch::new(&be, prefix.needs(&be, &rec)).unwrap();
    prefix
        .forward_inference(&be, &params, &state, &mut rec, &images, &mut scratch)
        .unwrap();
    let mut core_rec = net.plan(&be, 2, 8, 8).unwrap();
    let mut core_scratch = Scratch::new(&be, net.needs(&be, &core_rec)).unwrap();
    net.forward_inference(
        &be,
        &params,
        &state,
        &mut core_rec,
        &images,
        &mut core_scratch,
    )
    .unwrap();
    assert_eq!(rec.feature_dims(), core_rec.feature_dims());
    assert_eq!(rec.features().as_slice(), core_rec.feature_map().as_slice());
}

/// The firmware's run, shortened: the step allocates nothing once planned, the plan fits the
/// firmware's arena, and the DSCL loss falls.
#[test]
fn fine_tuning_fits_the_arena_and_lowers_the_loss() {
    let mut arena = vec![0.0f32; ARENA_LEN];
    let mut index_arena = vec![0u32; INDEX_ARENA_LEN];
    let be = CpuBackend::from_arena(&mut arena, &mut index_arena);
    let mut rng = SplitMix64::new(1);
    let config = TuneConfig::default();
    let mut model = Model::new(&be, &config).unwrap();
    let network = Network::new(&be, &config, &mut model, &mut rng).unwrap();
    let mut step = FineTuneStep::new(&be, &network, config).unwrap();
    let used = (be.arena_used(), be.index_arena_used());
    // The firmware's arena is sized to the plan, with little to spare.
    assert!(
        be.arena_remaining() < ARENA_LEN / 50,
        "{used:?} of {ARENA_LEN}"
    );

    let mut sampler = Sampler::new(&mut rng);
    let steps = 300;
    let schedule = LrSchedule::WarmupCosine {
        lr: 0.1,
        warmup_epochs: 30.0,
        epochs: steps as f64,
    };
    let mut losses = Vec::new();
    for s in 0..steps {
        let lr = schedule.lr_at(s as f64);
        losses.push(
            step.step(&be, &network, &mut model, &mut sampler, &mut rng, lr)
                .unwrap(),
        );
    }
    assert_eq!((be.arena_used(), be.index_arena_used()), used);
    let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len() as f64;
    let start = mean(&losses[8..28]);
    let end = mean(&losses[steps - 20..]);
    eprintln!("loss {start:.3} -> {end:.3} ({:.3})", end / start);
    assert!(end < 0.9 * start, "loss {start} -> {end}");
}
