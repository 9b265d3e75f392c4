//! Host runs of the firmware's code, with the same arena backend:
//! `cargo test --lib --target x86_64-unknown-linux-gnu` (in `examples/firmware`).

use dscl_core::train::LrSchedule;
use dscl_cpu::CpuBackend;

use crate::data::Sampler;
use crate::rng::SplitMix64;
use crate::tune::{
    build_network, empty_model, FineTuneStep, TuneConfig, ARENA_LEN, INDEX_ARENA_LEN,
};

/// The firmware's run, shortened: the step allocates nothing once planned, the plan fits the
/// firmware's arena, and the DSCL loss falls.
#[test]
fn fine_tuning_fits_the_arena_and_lowers_the_loss() {
    let mut arena = vec![0.0f32; ARENA_LEN];
    let mut index_arena = vec![0u32; INDEX_ARENA_LEN];
    let be = CpuBackend::from_arena(&mut arena, &mut index_arena);
    let mut rng = SplitMix64::new(1);
    let config = TuneConfig::default();
    let mut model = empty_model(&be, &config).unwrap();
    let network = build_network(&be, &config, &mut model, &mut rng).unwrap();
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
