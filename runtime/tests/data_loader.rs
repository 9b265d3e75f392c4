//! The parallel loader: determinism across worker counts, in-order delivery, drop_last,
//! error and skip handling, early drop, bounded prefetch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use dscl_runtime::data::{
    epoch_order, epoch_seed, Batch, Dataset, Digits, Image, Loader, LoaderConfig, Needed, Split,
    Transform,
};
use rand::Rng;

/// A synthetic data set: sample `i` is a 1x1 image of value `i`, label `i % 3`. Loads sleep a
/// little, varying per sample, so worker timing differs between runs; `bad` samples fail.
struct Synthetic {
    labels: Vec<u32>,
    bad: Vec<usize>,
    loads: AtomicUsize,
    delay_us: u64,
}

impl Synthetic {
    fn new(len: usize, bad: Vec<usize>, delay_us: u64) -> Arc<Self> {
        Arc::new(Synthetic {
            labels: (0..len).map(|i| (i % 3) as u32).collect(),
            bad,
            loads: AtomicUsize::new(0),
            delay_us,
        })
    }
}

impl Dataset for Synthetic {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn num_classes(&self) -> usize {
        3
    }
    fn labels(&self) -> &[u32] {
        &self.labels
    }
    fn load(&self, i: usize) -> anyhow::Result<Image> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        if self.delay_us > 0 {
            std::thread::sleep(Duration::from_micros(
                self.delay_us * ((i * 7919) % 5) as u64,
            ));
        }
        if self.bad.contains(&i) {
            bail!("decoding image bad-{i}.png: corrupt");
        }
        let mut img = Image::new(1, 1);
        img.pixels.fill(i as f32);
        Ok(img)
    }
    fn describe(&self, i: usize) -> String {
        format!("bad-{i}.png")
    }
}

/// The transform tags each item with its pixel value and a draw from its generator.
fn tagging() -> Transform<(usize, u64)> {
    Arc::new(|img: &Image, rng: &mut rand::rngs::Xoshiro256PlusPlus| {
        Ok((img.pixels[0] as usize, rng.next_u64()))
    })
}

fn config(batch: usize, workers: usize) -> LoaderConfig {
    LoaderConfig {
        seed: 42,
        ..LoaderConfig::new(batch, workers)
    }
}

fn collect(
    data: Arc<Synthetic>,
    order: Vec<usize>,
    config: LoaderConfig,
) -> Vec<Batch<(usize, u64)>> {
    Loader::new(data, order, tagging(), config)
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

#[test]
fn same_batches_for_any_worker_count_in_order() {
    let order = epoch_order(203, 5, 0);
    let one = collect(
        Synthetic::new(203, vec![], 50),
        order.clone(),
        config(16, 1),
    );
    let four = collect(
        Synthetic::new(203, vec![], 50),
        order.clone(),
        config(16, 4),
    );
    assert_eq!(one, four);
    assert_eq!(one.len(), 13);
    assert_eq!(one[12].len(), 203 - 12 * 16);
    let delivered: Vec<usize> = one.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(delivered, order);
    for b in &one {
        for k in 0..b.len() {
            assert_eq!(b.items[k].0, b.indices[k]);
            assert_eq!(b.labels[k], (b.indices[k] % 3) as u32);
        }
    }
    // A different seed changes the per-sample generators, not the order.
    let other = collect(
        Synthetic::new(203, vec![], 0),
        order,
        LoaderConfig {
            seed: 43,
            ..config(16, 4)
        },
    );
    assert_eq!(other[0].indices, one[0].indices);
    assert_ne!(other[0].items, one[0].items);
}

#[test]
fn drop_last_drops_only_the_partial_batch() {
    let keep = collect(
        Synthetic::new(10, vec![], 0),
        (0..10).collect(),
        config(4, 3),
    );
    assert_eq!(keep.iter().map(Batch::len).collect::<Vec<_>>(), [4, 4, 2]);
    let drop = collect(
        Synthetic::new(10, vec![], 0),
        (0..10).collect(),
        LoaderConfig {
            drop_last: true,
            ..config(4, 3)
        },
    );
    assert_eq!(drop.iter().map(Batch::len).collect::<Vec<_>>(), [4, 4]);
    let exact = collect(
        Synthetic::new(8, vec![], 0),
        (0..8).collect(),
        LoaderConfig {
            drop_last: true,
            ..config(4, 3)
        },
    );
    assert_eq!(exact.len(), 2);
    assert!(collect(Synthetic::new(3, vec![], 0), vec![], config(4, 2)).is_empty());
}

#[test]
fn a_bad_sample_ends_the_iteration_with_its_file() {
    let data = Synthetic::new(40, vec![13], 0);
    let mut loader = Loader::new(data, (0..40).collect(), tagging(), config(5, 4)).unwrap();
    for _ in 0..2 {
        assert_eq!(loader.next().unwrap().unwrap().len(), 5);
    }
    let e = format!("{:#}", loader.next().unwrap().unwrap_err());
    assert!(e.contains("bad-13.png"), "{e}");
    assert!(loader.next().is_none());
}

#[test]
fn skip_bad_fills_batches_from_later_samples() {
    let order: Vec<usize> = (0..20).collect();
    let cfg = LoaderConfig {
        skip_bad: true,
        ..config(4, 3)
    };
    let one = Loader::new(
        Synthetic::new(20, vec![1, 2, 9], 20),
        order.clone(),
        tagging(),
        LoaderConfig {
            workers: 1,
            ..cfg.clone()
        },
    )
    .unwrap();
    let mut loader =
        Loader::new(Synthetic::new(20, vec![1, 2, 9], 20), order, tagging(), cfg).unwrap();
    let mut batches = Vec::new();
    for b in loader.by_ref() {
        batches.push(b.unwrap());
    }
    assert_eq!(loader.skipped(), 3);
    assert_eq!(batches[0].indices, [0, 3, 4, 5]);
    assert_eq!(batches[1].indices, [6, 7, 8, 10]);
    assert_eq!(batches.iter().map(Batch::len).sum::<usize>(), 17);
    let one: Vec<_> = one.map(|b| b.unwrap()).collect();
    assert_eq!(one, batches);
}

#[test]
fn skip_bad_with_nothing_usable_left_is_an_error() {
    // (samples, bad ones, batch, drop_last): every sample bad; all but two bad with a batch of
    // four and the partial batch dropped; a single sample, bad.
    let cases: [(usize, Vec<usize>, usize, bool); 3] = [
        (8, (0..8).collect(), 4, false),
        (10, (0..8).collect(), 4, true),
        (1, vec![0], 1, false),
    ];
    for (len, bad, batch, drop_last) in cases {
        let skipped = bad.len();
        let cfg = LoaderConfig {
            skip_bad: true,
            drop_last,
            ..config(batch, 2)
        };
        let results: Vec<_> = Loader::new(
            Synthetic::new(len, bad, 0),
            (0..len).collect(),
            tagging(),
            cfg,
        )
        .unwrap()
        .collect();
        assert_eq!(
            results.len(),
            1,
            "one error and nothing else ({len} samples)"
        );
        let e = format!("{:#}", results[0].as_ref().unwrap_err());
        assert!(
            e.contains("--skip-bad left nothing to train on")
                && e.contains(&format!("{skipped} of the {len} samples")),
            "{e}"
        );
    }
    // One good sample is enough: no error.
    let cfg = LoaderConfig {
        skip_bad: true,
        ..config(4, 2)
    };
    let batches: Vec<_> = Loader::new(
        Synthetic::new(4, vec![0, 1, 2], 0),
        (0..4).collect(),
        tagging(),
        cfg,
    )
    .unwrap()
    .map(|b| b.unwrap().indices)
    .collect();
    assert_eq!(batches, [vec![3]]);
}

#[test]
fn transform_errors_end_the_iteration_even_with_skip_bad() {
    let transform: Transform<usize> = Arc::new(|img: &Image, _: &mut _| {
        if img.pixels[0] == 6.0 {
            bail!("crop larger than image");
        }
        Ok(img.pixels[0] as usize)
    });
    let loader = Loader::new(
        Synthetic::new(12, vec![], 0),
        (0..12).collect(),
        transform,
        LoaderConfig {
            skip_bad: true,
            ..config(4, 2)
        },
    )
    .unwrap();
    let results: Vec<_> = loader.collect();
    assert_eq!(results.len(), 2);
    let e = format!("{:#}", results[1].as_ref().unwrap_err());
    assert!(e.contains("crop larger") && e.contains("bad-6.png"), "{e}");
}

#[test]
fn a_panicking_transform_is_an_error_not_a_hang() {
    let transform: Transform<usize> = Arc::new(|img: &Image, _: &mut _| {
        if img.pixels[0] == 3.0 {
            panic!("transform bug (expected by the test)");
        }
        Ok(0)
    });
    let loader = Loader::new(
        Synthetic::new(12, vec![], 0),
        (0..12).collect(),
        transform,
        config(2, 2),
    )
    .unwrap();
    let results: Vec<_> = loader.collect();
    assert!(results.last().unwrap().is_err());
}

#[test]
fn dropping_early_stops_the_workers() {
    let data = Synthetic::new(100_000, vec![], 100);
    let start = Instant::now();
    {
        let mut loader = Loader::new(
            data.clone(),
            (0..100_000).collect(),
            tagging(),
            config(8, 4),
        )
        .unwrap();
        assert_eq!(loader.next().unwrap().unwrap().len(), 8);
        // Give the workers time to fill the prefetch queue and block.
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    // Only the first batch plus the bounded prefetch was decoded, not the whole order.
    let loads = data.loads.load(Ordering::Relaxed);
    assert!(loads < 100, "{loads} loads");
}

#[test]
fn invalid_configuration_is_an_error() {
    let data = Synthetic::new(4, vec![], 0);
    assert!(Loader::new(data.clone(), vec![0], tagging(), config(0, 1)).is_err());
    assert!(Loader::new(data.clone(), vec![0], tagging(), config(1, 0)).is_err());
    let e = Loader::new(data, vec![0, 4], tagging(), config(1, 1))
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("position 1"));
}

#[test]
fn loads_the_built_in_digits_in_parallel() {
    let data: Arc<dyn Dataset> = Arc::new(Digits::new(Split::Test));
    let order = epoch_order(data.len(), 1, 0);
    let identity: Transform<Image> = Arc::new(|img: &Image, _: &mut _| Ok(img.clone()));
    let loader = Loader::new(
        data.clone(),
        order,
        identity,
        LoaderConfig {
            seed: epoch_seed(1, 0),
            drop_last: true,
            ..LoaderConfig::new(64, 4)
        },
    )
    .unwrap();
    let batches: Vec<_> = loader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 500 / 64);
    let b = &batches[0];
    assert_eq!(b.items[0], data.load(b.indices[0]).unwrap());
    assert_eq!(b.labels[0], data.label(b.indices[0]));
}

/// Counts the transformed items alive (made by a worker, not yet dropped by the consumer) and
/// the most there ever were at once.
#[derive(Default)]
struct LiveItems {
    live: AtomicUsize,
    peak: AtomicUsize,
}

struct TrackedItem(Arc<LiveItems>);

impl Drop for TrackedItem {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn a_slow_consumer_never_has_more_than_the_prefetch_queue_decoded() {
    let (batch_size, workers, prefetch_batches, len) = (4usize, 2, 2, 400);
    let counts = Arc::new(LiveItems::default());
    let transform: Transform<TrackedItem> = {
        let counts = counts.clone();
        Arc::new(move |_: &Image, _: &mut _| {
            let live = counts.live.fetch_add(1, Ordering::SeqCst) + 1;
            counts.peak.fetch_max(live, Ordering::SeqCst);
            Ok(TrackedItem(counts.clone()))
        })
    };
    // The batch the consumer holds, plus per worker a full channel and the one item it is
    // blocked sending: nothing else may hold a decoded sample.
    let per_worker = (prefetch_batches * batch_size).div_ceil(workers);
    let bound = batch_size + workers * (per_worker + 1);
    let loader = Loader::new(
        Synthetic::new(len, vec![], 0),
        (0..len).collect(),
        transform,
        LoaderConfig {
            prefetch_batches,
            ..config(batch_size, workers)
        },
    )
    .unwrap();
    let mut batches = 0;
    for (i, batch) in loader.enumerate() {
        let batch = batch.unwrap();
        batches += 1;
        let left_after = len - (i + 1) * batch_size;
        if left_after >= 2 * bound {
            // The slow consumer: it holds on to its batch until the workers have filled
            // every buffer they have, so a loader decoding further ahead would show it.
            let deadline = Instant::now() + Duration::from_secs(60);
            while counts.live.load(Ordering::SeqCst) < bound {
                assert!(
                    Instant::now() < deadline,
                    "the workers never filled the prefetch queue ({} of {bound} items)",
                    counts.live.load(Ordering::SeqCst)
                );
                std::thread::yield_now();
            }
        }
        drop(batch);
    }
    assert_eq!(batches, len / batch_size);
    assert_eq!(counts.peak.load(Ordering::SeqCst), bound);
    assert_eq!(counts.live.load(Ordering::SeqCst), 0);
}

#[test]
fn a_loader_needing_some_positions_loads_only_those_and_keeps_the_others_slots() {
    let order = epoch_order(64, 9, 0);
    let full = collect(Synthetic::new(64, vec![], 20), order.clone(), config(8, 3));
    // One rank's group of a two-rank run: slots 4..8 of every batch.
    let data = Synthetic::new(64, vec![], 20);
    let needed: Needed = Arc::new(|position| position % 8 >= 4);
    let partial: Vec<_> = Loader::needing(
        data.clone(),
        order.clone(),
        tagging(),
        config(8, 3),
        Some(needed),
    )
    .unwrap()
    .map(|b| b.unwrap())
    .collect();
    assert_eq!(data.loads.load(Ordering::Relaxed), 32);
    assert_eq!(partial.len(), full.len());
    for (p, f) in partial.iter().zip(&full) {
        // Every slot keeps its index and label; the needed ones their item and generator.
        assert_eq!((&p.indices, &p.labels), (&f.indices, &f.labels));
        for slot in 0..8 {
            match slot >= 4 {
                true => assert_eq!(p.loaded(slot).unwrap(), &f.items[slot]),
                false => {
                    assert_eq!(p.items[slot], None);
                    let message = p.loaded(slot).unwrap_err().to_string();
                    assert!(message.contains("not loaded by this process"), "{message}");
                }
            }
        }
    }
    // Without `needed` it loads everything, as `Loader::new` does.
    let data = Synthetic::new(64, vec![], 0);
    let all: Vec<_> = Loader::needing(data.clone(), order.clone(), tagging(), config(8, 3), None)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(data.loads.load(Ordering::Relaxed), 64);
    assert!(all.iter().all(|b| b.items.iter().all(Option::is_some)));
    // Skipping a bad image would shift the batches of the processes that did not load it.
    let skipping = LoaderConfig {
        skip_bad: true,
        ..config(8, 3)
    };
    let needed: Needed = Arc::new(|position| position % 2 == 0);
    let refused = Loader::needing(data, order, tagging(), skipping, Some(needed));
    let message = refused.err().unwrap().to_string();
    assert!(message.contains("cannot skip unreadable"), "{message}");
}
