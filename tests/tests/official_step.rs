//! Three whole stage-1 steps against the official code: `DsclStep` replays
//! tests/data/official_step.safetensors, which tests/pytorch/make_official_step.py writes by
//! running the authors' `DSCL.forward_train` and main.py's training loop in PyTorch float64 as
//! their 2-GPU DistributedDataParallel run does it (R = 2 replicas without synchronised batch
//! norm, each crop set its own batch-norm pass, MoCo's shuffled key batch norm, the replicas'
//! gradients averaged, rank 0's running statistics broadcast, every replica's keys enqueued).
//!
//! Regenerate the fixture (from the repository root; CPU builds are enough):
//!
//! ```text
//! pip install torch torchvision safetensors
//! python3 tests/pytorch/make_official_step.py
//! ```
//!
//! The fixture holds a tiny ResNet's initial weights (named as dscl names them), the official
//! random queue start, three steps' inputs (query, key and crop images, boxes, labels, the key
//! shuffle, the official schedule's learning rate at each step's epoch) and the results: each step's DSCL and PBSD losses, and after the
//! last step the query encoder's weights and SGD velocity, the key encoder's weights, both
//! encoders' running statistics and the queue. Every one is checked: 1e-9 relative on the f64
//! reference backend, 1e-4 on the CPU backend in f32; the losses entry by entry, the tensors
//! entry by entry relative to the entry or, where it is smaller, to the tensor's
//! root-mean-square magnitude (see `max_rel`). The f64 step differs from the fixture by about
//! 2e-12, all of it the official losses' 1e-12 constants, which dscl's losses leave out (see
//! the script's `--no-eps`). `variants_are_caught` shows that the fixture tells the official
//! step from one replica, one joint crop pass, or keys normalised unshuffled.
//!
//! The same run as two processes of one replica group each (threads joined by a host
//! collective, `DsclStep::step_across`) matches the fixture to the same tolerances on every
//! rank, the ranks bit-identical; `two_ranks_need_each_exchange` shows that leaving out the
//! gradients' all-reduce or the running statistics' broadcast fails it. Run with
//! `--nocapture` for every worst difference.

use std::collections::BTreeMap;

use dscl_core::collective::{Collective, Reducible, Staged};
use dscl_core::nn::{BlockKind, Encoder, ResNetConfig, Stem};
use dscl_core::reference::ReferenceBackend;
use dscl_core::train::{
    ContrastiveLoss, CropNorm, DsclBatch, DsclConfig, DsclModel, DsclStep, LrSchedule, SgdConfig,
    StepShape,
};
use dscl_core::{Backend, Element, Solo};
use dscl_cpu::CpuBackend;
use dscl_tests::threads::{Skipped, Threads, Without};
use rand::rngs::Xoshiro256PlusPlus;
use rand::SeedableRng;
use safetensors::{Dtype, SafeTensors};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/official_step.safetensors"
);

struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    fn load() -> Self {
        let bytes = std::fs::read(FIXTURE).expect("tests/data/official_step.safetensors reads");
        Fixture { bytes }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("the fixture parses")
    }

    fn f64s(&self, name: &str) -> Vec<f64> {
        let tensors = self.tensors();
        let t = tensors
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture lacks {name}"));
        assert_eq!(t.dtype(), Dtype::F64, "{name}: dtype");
        t.data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn i64s(&self, name: &str) -> Vec<i64> {
        let tensors = self.tensors();
        let t = tensors
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture lacks {name}"));
        assert_eq!(t.dtype(), Dtype::I64, "{name}: dtype");
        t.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn u32s(&self, name: &str) -> Vec<u32> {
        self.i64s(name)
            .into_iter()
            .map(|v| u32::try_from(v).unwrap())
            .collect()
    }

    fn usize(&self, name: &str) -> usize {
        let v = self.i64s(&format!("config.{name}"));
        assert_eq!(v.len(), 1, "config.{name}");
        usize::try_from(v[0]).unwrap()
    }

    fn f64(&self, name: &str) -> f64 {
        let v = self.f64s(&format!("config.{name}"));
        assert_eq!(v.len(), 1, "config.{name}");
        v[0]
    }

    /// The names under `prefix` (without it).
    fn names_under(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .tensors()
            .names()
            .into_iter()
            .filter_map(|n| n.strip_prefix(prefix).map(str::to_string))
            .collect();
        names.sort();
        names
    }
}

/// The fixture's network and step settings.
struct Setup {
    encoder: Encoder,
    config: DsclConfig,
    shape: StepShape,
    steps: usize,
}

impl Setup {
    fn new(fx: &Fixture) -> Self {
        let widths = fx.i64s("config.widths");
        let stages = widths.len();
        let mut config = ResNetConfig {
            stem: Stem::ImageNet,
            stem_channels: fx.usize("stem_channels"),
            block: BlockKind::Basic,
            blocks: [0; 4],
            widths: [0; 4],
            stages,
            zero_init_residual: true,
        };
        for (s, &w) in widths.iter().enumerate() {
            config.blocks[s] = 1;
            config.widths[s] = usize::try_from(w).unwrap();
        }
        let encoder = Encoder::new(config, fx.usize("dim")).unwrap();
        let step = DsclConfig {
            loss: ContrastiveLoss::Dscl {
                beta: fx.f64("beta"),
            },
            temperature: fx.f64("temperature"),
            pbsd_weight: fx.f64("pbsd_weight"),
            crops: fx.usize("crops"),
            queue_len: fx.usize("queue_len"),
            key_momentum: fx.f64("key_momentum"),
            sgd: SgdConfig {
                momentum: fx.f64("sgd_momentum"),
                weight_decay: fx.f64("weight_decay"),
                dampening: 0.0,
                nesterov: false,
            },
            replicas: fx.usize("replicas"),
            crop_norm: CropNorm::PerSet,
        };
        let shape = StepShape {
            batch: fx.usize("batch"),
            image_size: fx.usize("image_size"),
            crop_size: fx.usize("crop_size"),
            num_classes: u32::try_from(fx.usize("num_classes")).unwrap(),
        };
        Setup {
            encoder,
            config: step,
            shape,
            steps: fx.usize("steps"),
        }
    }
}

/// What the replay departs from, to show the fixture catches it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    Official,
    /// The batch as one replica (crop sets still separate).
    OneReplica,
    /// One replica and one joint crop pass: the step before replicas and crop sets.
    OneReplicaJointCrops,
    /// Two replicas, keys normalised in image order (no shuffle).
    UnshuffledKeys,
}

/// One run's results, as f64, under the fixture's names.
struct Outcome {
    losses: BTreeMap<&'static str, Vec<f64>>,
    tensors: BTreeMap<String, Vec<f64>>,
    queue_labels: Vec<u32>,
    queue_ptr: usize,
}

fn elems<E: Element>(values: &[f64]) -> Vec<E> {
    values.iter().map(|&v| E::from_f64(v)).collect()
}

fn upload<B: Backend>(be: &B, values: &[f64]) -> B::Buffer {
    let mut buf = be.alloc(values.len()).unwrap();
    be.upload(&mut buf, 0, &elems::<B::Elem>(values)).unwrap();
    buf
}

fn upload_index<B: Backend>(be: &B, values: &[u32]) -> B::IndexBuffer {
    let mut buf = be.alloc_index(values.len()).unwrap();
    be.upload_index(&mut buf, 0, values).unwrap();
    buf
}

/// Builds the model from the fixture's initial weights and queue, runs the three steps as the
/// rank of the run `collective` connects: with more than one rank, this rank's replica group
/// of every step's images (its key images those of its slots of the shuffle).
fn replay<B: Backend>(
    be: &B,
    fx: &Fixture,
    variant: Variant,
    collective: &impl Collective<B>,
) -> Outcome {
    let Setup {
        encoder,
        mut config,
        shape,
        steps,
    } = Setup::new(fx);
    match variant {
        Variant::Official | Variant::UnshuffledKeys => {}
        Variant::OneReplica => config.replicas = 1,
        Variant::OneReplicaJointCrops => {
            config.replicas = 1;
            config.crop_norm = CropNorm::Joint;
        }
    }

    // Every parameter and running statistic comes from the fixture, one to one by name.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let mut model = DsclModel::new(be, &encoder, config.queue_len, &mut rng).unwrap();
    let param_names: Vec<String> = encoder
        .params
        .specs()
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    let mut sorted = param_names.clone();
    sorted.sort();
    assert_eq!(
        fx.names_under("init.params."),
        sorted,
        "parameter names: fixture against dscl's layout"
    );
    for (i, name) in param_names.iter().enumerate() {
        let id = encoder.params.find(name).unwrap();
        assert_eq!(id.index(), i);
        let values = elems::<B::Elem>(&fx.f64s(&format!("init.params.{name}")));
        model.query.params.upload(be, id, &values).unwrap();
        // MoCo's start: the key encoder is a copy of the query encoder.
        model.key_params.upload(be, id, &values).unwrap();
    }
    let state_names: Vec<String> = encoder
        .state
        .specs()
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    let mut sorted = state_names.clone();
    sorted.sort();
    assert_eq!(
        fx.names_under("init.state."),
        sorted,
        "running statistics names: fixture against dscl's layout"
    );
    for name in &state_names {
        let id = encoder.state.find(name).unwrap();
        let values = elems::<B::Elem>(&fx.f64s(&format!("init.state.{name}")));
        model.query_state.upload(be, id, &values).unwrap();
        model.key_state.upload(be, id, &values).unwrap();
    }
    let k = config.queue_len;
    be.upload(&mut model.queue.keys, 0, &elems(&fx.f64s("init.queue")))
        .unwrap();
    be.upload_index(&mut model.queue.labels, 0, &fx.u32s("init.queue_labels"))
        .unwrap();
    model.queue.set_position(k, 0).unwrap();

    let placement = collective.placement();
    let mut step = DsclStep::placed(be, &encoder, config, shape, placement).unwrap();
    let (b, c) = (shape.batch, config.crops);
    // This rank's images of each step's batch: `mine` of the batch's `b`, from `first`.
    let mine = b / placement.world;
    let first = placement.rank * mine;
    let rows_of = |values: &[f64], width: usize| -> Vec<f64> {
        (0..values.len() / (b * width))
            .flat_map(|set| {
                let start = (set * b + first) * width;
                values[start..start + mine * width].to_vec()
            })
            .collect()
    };
    let image = 3 * shape.image_size * shape.image_size;
    let crop = 3 * shape.crop_size * shape.crop_size;
    let (queries, keys, crops, boxes) = (
        fx.f64s("input.queries"),
        fx.f64s("input.keys"),
        fx.f64s("input.crops"),
        fx.f64s("input.boxes"),
    );
    let (labels, shuffles) = (fx.u32s("input.labels"), fx.u32s("input.key_shuffle"));
    let lrs = official_learning_rates(fx);
    let mut losses: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for t in 0..steps {
        let q = upload(
            be,
            &rows_of(&queries[t * b * image..(t + 1) * b * image], image),
        );
        let cr = upload(
            be,
            &rows_of(&crops[t * c * b * crop..(t + 1) * c * b * crop], crop),
        );
        // A box names its image by its index in the batch this rank holds.
        let mut step_boxes = rows_of(&boxes[t * c * b * 5..(t + 1) * c * b * 5], 5);
        for row in step_boxes.chunks_exact_mut(5) {
            row[0] -= first as f64;
        }
        let bx = upload(be, &step_boxes);
        let lb = upload_index(be, &labels[t * b + first..t * b + first + mine]);
        let order = &shuffles[t * b..(t + 1) * b];
        // One replica normalises its keys in any order alike, and the step takes no shuffle.
        let shuffled = variant != Variant::UnshuffledKeys && step.config().replicas > 1;
        let shuffle = shuffled.then_some(order);
        // The key images at their shuffled slots (slot j holds image order[j]), as the runtime
        // writes them; in image order without the shuffle.
        let step_keys = &keys[t * b * image..(t + 1) * b * image];
        let slots: Vec<f64> = match shuffle {
            Some(order) => order[first..first + mine]
                .iter()
                .flat_map(|&i| &step_keys[i as usize * image..(i as usize + 1) * image])
                .copied()
                .collect(),
            None => rows_of(step_keys, image),
        };
        let kk = upload(be, &slots);
        let batch = DsclBatch {
            queries: &q,
            keys: &kk,
            crops: &cr,
            crop_boxes: &bx,
            labels: &lb,
            key_shuffle: shuffle,
        };
        let l = step
            .step_across(be, collective, &encoder, &mut model, &batch, lrs[t])
            .unwrap();
        losses.entry("dscl").or_default().push(l.contrastive);
        losses.entry("pbsd").or_default().push(l.pbsd);
        losses.entry("total").or_default().push(l.total);
    }

    let mut tensors = BTreeMap::new();
    let sets = [
        ("params", &model.query.params, &encoder.params),
        ("velocity", &model.query.velocity, &encoder.params),
        ("key_params", &model.key_params, &encoder.params),
        ("state", &model.query_state, &encoder.state),
        ("key_state", &model.key_state, &encoder.state),
    ];
    for (set, values, layout) in sets {
        for spec in layout.specs() {
            let id = layout.find(&spec.name).unwrap();
            let mut out = vec![B::Elem::default(); spec.len()];
            values.download(be, id, &mut out).unwrap();
            tensors.insert(
                format!("final.{set}.{}", spec.name),
                out.iter().map(|v| v.widen()).collect(),
            );
        }
    }
    let mut queue = vec![B::Elem::default(); k * encoder.embedding_dim()];
    be.download(&model.queue.keys, 0, &mut queue).unwrap();
    tensors.insert(
        "final.queue".to_string(),
        queue.iter().map(|v| v.widen()).collect(),
    );
    let mut queue_labels = vec![0u32; k];
    be.download_index(&model.queue.labels, 0, &mut queue_labels)
        .unwrap();
    assert_eq!(model.queue.filled(), k, "the queue stays full");
    Outcome {
        losses,
        tensors,
        queue_labels,
        queue_ptr: model.queue.next_row(),
    }
}

/// The largest error of `got` against `expected`: each entry's error relative to the entry
/// or, with `floor`, to the tensor's root-mean-square magnitude where the entry is smaller (an
/// entry's rounding error scales with the magnitudes it is computed from, the tensor's, not
/// with its own: the small entries of a gradient come out of the same sums as the large ones).
/// Judged against 1e-3 of the tensor's largest magnitude instead, f32 rounding alone reaches
/// 2e-4 (the reference backend in f32) to 8e-4 (the CPU backend) over the three steps.
fn max_rel(got: &[f64], expected: &[f64], floor: bool) -> f64 {
    assert_eq!(got.len(), expected.len());
    let rms = if floor {
        (expected.iter().map(|e| e * e).sum::<f64>() / expected.len() as f64).sqrt()
    } else {
        0.0
    };
    got.iter()
        .zip(expected)
        .map(|(&g, &e)| {
            let abs = (g - e).abs();
            if abs == 0.0 {
                0.0
            } else if abs.is_nan() {
                f64::INFINITY
            } else {
                abs / e.abs().max(rms)
            }
        })
        .fold(0.0, f64::max)
}

/// The worst error per quantity (losses, and each kind of final tensor over all its
/// tensors), with the tensor it occurs in.
fn compare(fx: &Fixture, out: &Outcome) -> Vec<(String, f64, String)> {
    let mut rows = Vec::new();
    for (name, got) in &out.losses {
        let err = max_rel(got, &fx.f64s(&format!("step.{name}")), false);
        rows.push((format!("loss {name}"), err, format!("{got:.6?}")));
    }
    for set in [
        "params",
        "velocity",
        "key_params",
        "state",
        "key_state",
        "queue",
    ] {
        let mut worst = (0.0f64, String::new());
        for (name, got) in &out.tensors {
            let belongs = if set == "queue" {
                name == "final.queue"
            } else {
                name.starts_with(&format!("final.{set}."))
            };
            if belongs {
                let err = max_rel(got, &fx.f64s(name), true);
                if err >= worst.0 {
                    worst = (err, name.clone());
                }
            }
        }
        rows.push((set.to_string(), worst.0, worst.1));
    }
    rows
}

fn print_rows(what: &str, rows: &[(String, f64, String)]) {
    println!("{what}:");
    for (q, err, at) in rows {
        println!("  {q:<12} max rel {err:9.2e}  ({at})");
    }
}

fn check<B: Backend>(be: &B, what: &str, tol: f64) {
    let fx = Fixture::load();
    check_outcome(&fx, &replay(be, &fx, Variant::Official, &Solo), what, tol);
}

fn check_outcome(fx: &Fixture, out: &Outcome, what: &str, tol: f64) {
    let rows = compare(fx, out);
    print_rows(what, &rows);
    assert_eq!(
        out.queue_labels,
        fx.u32s("final.queue_labels"),
        "queue labels"
    );
    let ptr = fx.i64s("final.queue_ptr");
    assert_eq!(out.queue_ptr as i64, ptr[0], "queue write position");
    for (q, err, at) in &rows {
        assert!(err <= &tol, "{what}: {q} differs by {err:e} (at {at})");
    }
}

#[test]
fn reference_f64_matches_official() {
    check(&ReferenceBackend::<f64>::new(), "reference f64", 1e-9);
}

#[test]
fn cpu_f32_matches_official() {
    check(&CpuBackend::new(), "cpu f32", 1e-4);
}

/// One replica, one joint crop pass or keys normalised in image order change every result:
/// the fixture pins each of the official step's batch-norm groupings.
#[test]
fn variants_are_caught() {
    let fx = Fixture::load();
    let be = ReferenceBackend::<f64>::new();
    for variant in [
        Variant::OneReplica,
        Variant::OneReplicaJointCrops,
        Variant::UnshuffledKeys,
    ] {
        let rows = compare(&fx, &replay(&be, &fx, variant, &Solo));
        print_rows(&format!("{variant:?} against the fixture"), &rows);
        let worst = rows.iter().fold(0.0f64, |m, r| m.max(r.1));
        assert!(
            worst > 1e-3,
            "{variant:?} passes for the official step (worst difference {worst:e})"
        );
    }
}

/// The fixture's run as it was made, two processes of one replica group each (threads here,
/// joined by a host collective): every rank's losses and final tensors match the fixture as
/// the one-process replay's do, and the two ranks hold the same bits.
fn check_two_ranks<B: Backend>(new_backend: impl Fn() -> B + Sync, what: &str, tol: f64)
where
    B::Elem: Reducible,
{
    let fx = Fixture::load();
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let ranks: Vec<_> = Threads::group(2)
            .into_iter()
            .map(|host| {
                let (fx, new_backend) = (&fx, &new_backend);
                s.spawn(move || {
                    let collective = Staged::<_, B::Elem>::new(host);
                    replay(&new_backend(), fx, Variant::Official, &collective)
                })
            })
            .collect();
        ranks.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for (rank, out) in outcomes.iter().enumerate() {
        check_outcome(&fx, out, &format!("{what}, rank {rank} of 2"), tol);
    }
    let (a, b) = (&outcomes[0], &outcomes[1]);
    assert_eq!(a.losses, b.losses, "{what}: the ranks' losses");
    for (name, values) in &a.tensors {
        let same = values
            .iter()
            .zip(&b.tensors[name])
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{what}: {name} differs between the ranks");
    }
    assert_eq!(a.queue_labels, b.queue_labels, "{what}: the ranks' queues");
}

/// Two ranks without the gradients' all-reduce, or without rank 0's running statistics
/// broadcast, end away from the fixture on rank 1 (whose group is not group 0): each
/// exchange is needed for the ranks to be the official run.
#[test]
fn two_ranks_need_each_exchange() {
    let fx = Fixture::load();
    for skipped in [Skipped::GradientSum, Skipped::StateBroadcast] {
        let outcomes: Vec<Outcome> = std::thread::scope(|s| {
            let ranks: Vec<_> = Threads::group(2)
                .into_iter()
                .map(|host| {
                    let fx = &fx;
                    s.spawn(move || {
                        let collective = Without {
                            inner: Staged::<_, f64>::new(host),
                            skipped,
                        };
                        let be = ReferenceBackend::<f64>::new();
                        replay(&be, fx, Variant::Official, &collective)
                    })
                })
                .collect();
            ranks.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let rows = compare(&fx, &outcomes[1]);
        print_rows(&format!("rank 1 without {skipped:?}"), &rows);
        let worst = rows.iter().fold(0.0f64, |m, r| m.max(r.1));
        assert!(
            worst > 1e-3,
            "without {skipped:?}, rank 1 still matches (worst difference {worst:e})"
        );
    }
}

#[test]
fn reference_f64_two_ranks_match_official() {
    check_two_ranks(ReferenceBackend::<f64>::new, "reference f64", 1e-9);
}

#[test]
fn cpu_f32_two_ranks_match_official() {
    check_two_ranks(CpuBackend::new, "cpu f32", 1e-4);
}

/// Each step's learning rate from dscl's own stage-1 schedule (`LrSchedule::WarmupCosine`) at
/// the fixture's fractional epochs, required to equal the official `adjust_learning_rate`'s
/// that the fixture used: the fixture's steps straddle the end of the warm-up, so a changed
/// warm-up or cosine fails here rather than passing with the fixture's rates fed in.
fn official_learning_rates(fx: &Fixture) -> Vec<f64> {
    let schedule = LrSchedule::WarmupCosine {
        lr: 0.4,
        warmup_epochs: 1.0,
        epochs: 3.0,
    };
    let ours: Vec<f64> = fx
        .f64s("input.epoch")
        .iter()
        .map(|&epoch| schedule.lr_at(epoch))
        .collect();
    let official = fx.f64s("input.lr");
    assert_eq!(ours.len(), official.len());
    for (step, (a, b)) in ours.iter().zip(&official).enumerate() {
        assert!(
            (a - b).abs() <= 1e-15 * b.abs().max(1.0),
            "step {step}: our schedule gives lr {a}, the official adjust_learning_rate {b}"
        );
    }
    ours
}
