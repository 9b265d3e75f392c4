//! The classifier steps (stage 2's linear probe and the cross-entropy baseline) across
//! processes: two ranks on threads, joined by a host collective, each holding one replica group
//! of every batch, take the steps one process takes with two replica groups; the ranks hold the
//! same bits after every step (1e-5 relative to one process on the CPU backend in f32, 1e-9 on
//! the f64 reference); the groups are real (two differ from one); and both the gradients'
//! all-reduce and rank 0's running-statistics broadcast are needed. Run with `--nocapture` for
//! the worst differences.

use dscl_core::backend::prelude::*;
use dscl_core::collective::{Collective, Reducible, Staged};
use dscl_core::nn::{LinearClassifier, ResNetClassifier, ResNetConfig, TensorSet};
use dscl_core::reference::ReferenceBackend;
use dscl_core::train::{ClassifierStep, SgdConfig, Trainable};
use dscl_core::{Backend, Element, Solo};
use dscl_cpu::CpuBackend;
use dscl_tests::threads::{Skipped, Threads, Without};
use rand::rngs::Xoshiro256PlusPlus;
use rand::SeedableRng;

use super::{dataset, Gen, CLASSES, SIZE};

/// The run's batch, over every rank.
const BATCH: usize = 16;
const STEPS: usize = 3;

#[derive(Clone, Copy, Debug)]
enum Kind {
    CrossEntropy,
    LinearProbe,
}

/// What a run leaves: each step's loss, and after each step every tensor it trains and every
/// running statistic, widened to f64.
struct Outcome {
    losses: Vec<f64>,
    after_step: Vec<Tensors>,
}

struct Tensors {
    trained: Vec<Vec<f64>>,
    state: Vec<Vec<f64>>,
}

fn widened<B: Backend>(be: &B, set: &TensorSet<B>) -> Vec<Vec<f64>> {
    set.buffers()
        .iter()
        .map(|buf| {
            let mut values = vec![B::Elem::default(); buf.len()];
            be.download(buf, 0, &mut values).unwrap();
            values.into_iter().map(Element::widen).collect()
        })
        .collect()
}

fn upload<B: Backend>(be: &B, values: &[f32]) -> B::Buffer {
    let elems: Vec<B::Elem> = values
        .iter()
        .map(|&v| B::Elem::from_f64(v as f64))
        .collect();
    let mut buf = be.alloc(elems.len()).unwrap();
    be.upload(&mut buf, 0, &elems).unwrap();
    buf
}

fn upload_labels<B: Backend>(be: &B, values: &[u32]) -> B::IndexBuffer {
    let mut buf = be.alloc_index(values.len()).unwrap();
    be.upload_index(&mut buf, 0, values).unwrap();
    buf
}

/// `STEPS` steps of `kind` on a tiny ResNet as the rank `collective` connects: with one rank,
/// one process of `replicas` groups over each whole batch; with more, this rank's group of it.
fn run<B: Backend>(
    be: &B,
    kind: Kind,
    collective: &impl Collective<B>,
    replicas: usize,
) -> Outcome {
    let placement = collective.placement();
    let (images, labels) = dataset();
    // The dataset is sorted by class: every batch takes a fixed random sample instead.
    let mut gen = Gen::new(11);
    let mut order: Vec<usize> = (0..images.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, gen.index(i + 1));
    }

    let def = ResNetClassifier::new(ResNetConfig::tiny(), CLASSES).unwrap();
    let probe = LinearClassifier::new(def.backbone.feature_channels(), CLASSES).unwrap();
    // The same seed on every rank: the ranks start from the same weights.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let mut model = Trainable::initialised(be, &def.params, &mut rng).unwrap();
    let mut state = TensorSet::initialised(be, &def.state, &mut rng).unwrap();
    let mut classifier = Trainable::initialised(be, &probe.params, &mut rng).unwrap();
    let fc = match kind {
        Kind::CrossEntropy => &def.fc,
        Kind::LinearProbe => &probe.fc,
    };
    let mut step = if placement.world > 1 {
        ClassifierStep::placed(be, &def.backbone, fc, BATCH, SIZE, placement).unwrap()
    } else {
        ClassifierStep::replicated(be, &def.backbone, fc, BATCH, SIZE, replicas).unwrap()
    };
    let local = step.local_batch();
    assert_eq!(local, BATCH / placement.world);

    let mut outcome = Outcome {
        losses: Vec::new(),
        after_step: Vec::new(),
    };
    for s in 0..STEPS {
        let first = s * BATCH + placement.rank * local;
        let mine = &order[first..first + local];
        let pixels: Vec<f32> = mine.iter().flat_map(|&i| images[i].clone()).collect();
        let ys: Vec<u32> = mine.iter().map(|&i| labels[i]).collect();
        let (x, y) = (upload(be, &pixels), upload_labels(be, &ys));
        let loss = match kind {
            Kind::CrossEntropy => step.cross_entropy_step_across(
                be,
                collective,
                &def.backbone,
                &def.fc,
                &mut model,
                &mut state,
                &x,
                &y,
                &SgdConfig::STAGE1,
                0.1,
            ),
            Kind::LinearProbe => step.linear_probe_step_across(
                be,
                collective,
                &def.backbone,
                &model.params,
                &mut state,
                &probe.fc,
                &mut classifier,
                &x,
                &y,
                &SgdConfig::STAGE2,
                0.5,
            ),
        };
        outcome.losses.push(loss.unwrap());
        let trained = match kind {
            Kind::CrossEntropy => &model.params,
            Kind::LinearProbe => &classifier.params,
        };
        outcome.after_step.push(Tensors {
            trained: widened(be, trained),
            state: widened(be, &state),
        });
    }
    outcome
}

/// Two ranks of one group each, run on threads through `collective` (made from each rank's
/// end of the threads' host collective).
fn two_ranks<B: Backend, C: Collective<B>>(
    new_backend: &(impl Fn() -> B + Sync),
    kind: Kind,
    collective: impl Fn(Threads) -> C + Sync,
) -> Vec<Outcome> {
    std::thread::scope(|s| {
        let ranks: Vec<_> = Threads::group(2)
            .into_iter()
            .map(|host| {
                let collective = &collective;
                s.spawn(move || run(&new_backend(), kind, &collective(host), 2))
            })
            .collect();
        ranks.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

/// The worst difference of `got` from `expected`, relative to each entry or, where it is
/// smaller, to its tensor's root-mean-square (so entries near zero are not compared to
/// themselves).
fn worst(got: &[Vec<f64>], expected: &[Vec<f64>]) -> f64 {
    assert_eq!(got.len(), expected.len());
    let mut worst = 0.0f64;
    for (g, e) in got.iter().zip(expected) {
        assert_eq!(g.len(), e.len());
        let rms = (e.iter().map(|v| v * v).sum::<f64>() / e.len() as f64).sqrt();
        for (&g, &e) in g.iter().zip(e) {
            let scale = e.abs().max(rms);
            let diff = (g - e).abs();
            if diff > 0.0 {
                worst = worst.max(diff / scale);
            }
        }
    }
    worst
}

/// The worst differences of a run from another: over every step's loss, over the trained
/// tensors after every step, over the running statistics after every step.
fn differences(got: &Outcome, expected: &Outcome) -> [f64; 3] {
    let losses = worst(
        std::slice::from_ref(&got.losses),
        std::slice::from_ref(&expected.losses),
    );
    let steps = got.after_step.iter().zip(&expected.after_step);
    let over_steps = |part: fn(&Tensors) -> &Vec<Vec<f64>>| {
        steps
            .clone()
            .fold(0.0f64, |w, (g, e)| w.max(worst(part(g), part(e))))
    };
    [losses, over_steps(|t| &t.trained), over_steps(|t| &t.state)]
}

fn check_two_ranks<B: Backend>(new_backend: impl Fn() -> B + Sync, what: &str, tol: f64)
where
    B::Elem: Reducible,
{
    for kind in [Kind::CrossEntropy, Kind::LinearProbe] {
        let one = run(&new_backend(), kind, &Solo, 2);
        let ranks = two_ranks(&new_backend, kind, Staged::<_, B::Elem>::new);
        let (a, b) = (&ranks[0], &ranks[1]);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.losses), bits(&b.losses), "{what} {kind:?}: losses");
        for (s, (ta, tb)) in a.after_step.iter().zip(&b.after_step).enumerate() {
            let (ta, tb) = (
                [&ta.trained[..], &ta.state].concat(),
                [&tb.trained[..], &tb.state].concat(),
            );
            for (i, (x, y)) in ta.iter().zip(&tb).enumerate() {
                assert_eq!(
                    bits(x),
                    bits(y),
                    "{what} {kind:?}: tensor {i} differs between the ranks after step {s}"
                );
            }
        }
        let diff = differences(a, &one);
        eprintln!(
            "{what} {kind:?}: two ranks against one process of two groups, worst \
             [loss, trained, running] {diff:?}"
        );
        for (d, of) in diff
            .iter()
            .zip(["losses", "trained tensors", "running statistics"])
        {
            assert!(*d <= tol, "{what} {kind:?}: {of} differ by {d:e} > {tol:e}");
        }
    }
}

#[test]
fn cpu_f32_two_ranks_take_the_two_group_steps() {
    check_two_ranks(CpuBackend::new, "cpu f32", 1e-5);
}

#[test]
fn reference_f64_two_ranks_take_the_two_group_steps() {
    check_two_ranks(ReferenceBackend::<f64>::new, "reference f64", 1e-9);
}

/// Two replica groups on one process are not one: each normalises its own half of the batch.
#[test]
fn two_groups_differ_from_one() {
    let be = CpuBackend::new();
    for kind in [Kind::CrossEntropy, Kind::LinearProbe] {
        let (one, two) = (run(&be, kind, &Solo, 1), run(&be, kind, &Solo, 2));
        let diff = differences(&two, &one);
        eprintln!("{kind:?}: two groups against one, worst [loss, trained, running] {diff:?}");
        for (d, of) in diff
            .iter()
            .zip(["losses", "trained tensors", "running statistics"])
        {
            assert!(*d > 1e-3, "{kind:?}: two groups' {of} match one's ({d:e})");
        }
    }
}

/// Without the gradients' all-reduce each rank steps on its own half of the gradient, and
/// neither rank's weights end where the one process of two groups leaves them; without rank 0's
/// running statistics broadcast, rank 1 keeps its own group's (which one process never moves).
#[test]
fn two_ranks_need_each_exchange() {
    let new_backend = CpuBackend::new;
    for kind in [Kind::CrossEntropy, Kind::LinearProbe] {
        let one = run(&new_backend(), kind, &Solo, 2);
        for skipped in [Skipped::GradientSum, Skipped::StateBroadcast] {
            let ranks = two_ranks(&new_backend, kind, |host| Without {
                inner: Staged::<_, f32>::new(host),
                skipped,
            });
            let [_, trained, running] = differences(&ranks[1], &one);
            eprintln!(
                "{kind:?}: rank 1 without {skipped:?}, worst trained {trained:e}, running {running:e}"
            );
            let missed = match skipped {
                Skipped::GradientSum => trained,
                Skipped::StateBroadcast => running,
            };
            assert!(
                missed > 1e-3,
                "{kind:?}: rank 1 matches one process without {skipped:?} ({missed:e})"
            );
        }
    }
}
