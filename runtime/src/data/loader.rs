//! The parallel loader: decodes and transforms samples on worker threads and hands out
//! batches in order.
//!
//! Worker `w` of `W` handles the positions `w, w + W, w + 2W, ...` of the order and sends each
//! result into its own bounded channel (`std::sync::mpsc::sync_channel`); the consumer reads
//! position `p` from channel `p % W`. So results arrive in order without a reordering buffer,
//! the channels' capacity is the only prefetch buffer (a worker blocks once it is that far
//! ahead), and each sample's transform gets a generator seeded from (seed, position), so the
//! batches are the same whatever the number of workers or the thread timing.
//!
//! A loader may load only some positions ([`Loader::needing`]): a process of a data-parallel
//! run uses only its group's images of every batch, and decoding the others would multiply the
//! node's decoding work by the number of processes. The positions it does not need are handed
//! out as `None` in their slots, so every batch keeps its length and every needed sample its
//! position and generator.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Context};
use rand::rngs::Xoshiro256PlusPlus;

use super::seeding::sample_rng;
use super::Dataset;
use super::Image;

/// Turns a decoded image into a training item (augmentation, normalisation, views), with a
/// generator private to the sample.
pub type Transform<T> =
    Arc<dyn Fn(&Image, &mut Xoshiro256PlusPlus) -> anyhow::Result<T> + Send + Sync>;

/// Whether position `p` of a loader's order is loaded ([`Loader::needing`]).
pub type Needed = Arc<dyn Fn(usize) -> bool + Send + Sync>;

/// How a [`Loader`] batches and prefetches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch (at least 1).
    pub batch_size: usize,
    /// Worker threads decoding in parallel (at least 1).
    pub workers: usize,
    /// Seeds the per-sample generators; use a different one each epoch
    /// ([`epoch_seed`](super::epoch_seed)) so augmentations differ between epochs.
    pub seed: u64,
    /// Drop the last batch when it is smaller than `batch_size`, as training does so that
    /// batch statistics are always over full batches.
    pub drop_last: bool,
    /// Skip samples whose image cannot be loaded (reported once on stderr and counted)
    /// instead of ending the iteration with an error. Transform errors always end it: they
    /// point at the configuration, not at one bad file.
    pub skip_bad: bool,
    /// How many batches' worth of samples may be decoded ahead of the consumer, over all
    /// workers together.
    pub prefetch_batches: usize,
    /// Position of the order's first sample within the whole epoch: a run resumed mid-epoch
    /// passes the rest of the epoch's order and the number of samples already seen, so every
    /// sample gets the same generator as in an uninterrupted run.
    pub first_position: usize,
}

impl LoaderConfig {
    /// `batch_size` and `workers` as given, seed 0, keep the last partial batch, stop on a bad
    /// image, prefetch two batches.
    pub fn new(batch_size: usize, workers: usize) -> Self {
        LoaderConfig {
            batch_size,
            workers,
            seed: 0,
            drop_last: false,
            skip_bad: false,
            prefetch_batches: 2,
            first_position: 0,
        }
    }
}

/// A batch of transformed samples, in the order's order.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<T> {
    pub items: Vec<T>,
    pub labels: Vec<u32>,
    /// The data-set index of each item.
    pub indices: Vec<usize>,
}

impl<T> Batch<T> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl<T> Batch<Option<T>> {
    /// The item in `slot` of a [`Loader::needing`] batch; an error if this loader did not load
    /// it (the stage asked for a slot it said it would not use).
    pub fn loaded(&self, slot: usize) -> anyhow::Result<&T> {
        match self.items.get(slot) {
            Some(Some(item)) => Ok(item),
            Some(None) => bail!(
                "slot {slot} of the batch was not loaded by this process, which said it would \
                 not use it"
            ),
            None => bail!("slot {slot} is beyond a batch of {}", self.items.len()),
        }
    }
}

/// What a worker sends for one position of the order.
enum Outcome<T> {
    Item(T),
    /// A position the loader does not need: neither loaded nor transformed.
    NotNeeded,
    LoadFailed(anyhow::Error),
    TransformFailed(anyhow::Error),
}

/// Iterates over the batches of `dataset` in `order`; see the module documentation.
///
/// Yields `Ok(batch)` until the order is exhausted, or one `Err` (then `None`) when a sample
/// fails. Dropping the loader early stops and joins its workers.
pub struct Loader<T> {
    dataset: Arc<dyn Dataset>,
    order: Arc<Vec<usize>>,
    config: LoaderConfig,
    receivers: Vec<Receiver<Outcome<T>>>,
    /// What a position that is not needed yields: `None` of a [`Loader::needing`] loader.
    not_needed: Option<fn() -> T>,
    workers: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    next_position: usize,
    finished: bool,
    skipped: usize,
    batches: usize,
}

impl<T: Send + 'static> Loader<T> {
    /// Starts the workers. Errors: a zero batch size or worker count, an index in `order`
    /// out of range for `dataset`, or a thread that cannot be started.
    pub fn new(
        dataset: Arc<dyn Dataset>,
        order: Vec<usize>,
        transform: Transform<T>,
        config: LoaderConfig,
    ) -> anyhow::Result<Self> {
        Self::start(dataset, order, transform, config, None, None)
    }

    fn start(
        dataset: Arc<dyn Dataset>,
        order: Vec<usize>,
        transform: Transform<T>,
        config: LoaderConfig,
        needed: Option<Needed>,
        not_needed: Option<fn() -> T>,
    ) -> anyhow::Result<Self> {
        if config.batch_size == 0 {
            bail!("the batch size must be at least 1");
        }
        if config.workers == 0 {
            bail!("the data loader needs at least 1 worker thread");
        }
        if let Some((position, &index)) =
            order.iter().enumerate().find(|(_, &i)| i >= dataset.len())
        {
            bail!(
                "sample order position {position} refers to index {index}, but the data set \
                 has {} samples",
                dataset.len()
            );
        }
        let order = Arc::new(order);
        let workers = config.workers.min(order.len());
        let capacity =
            (config.prefetch_batches.max(1) * config.batch_size).div_ceil(workers.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let mut loader = Loader {
            dataset,
            order,
            config,
            receivers: Vec::with_capacity(workers),
            not_needed,
            workers: Vec::with_capacity(workers),
            stop,
            next_position: 0,
            finished: false,
            skipped: 0,
            batches: 0,
        };
        for w in 0..workers {
            let (sender, receiver) = sync_channel(capacity);
            let job = WorkerJob {
                dataset: loader.dataset.clone(),
                order: loader.order.clone(),
                transform: transform.clone(),
                needed: needed.clone(),
                stop: loader.stop.clone(),
                seed: loader.config.seed,
                first: w,
                position_offset: loader.config.first_position,
                step: workers,
                sender,
            };
            // On failure `loader` is dropped here, which stops the workers already started.
            let handle = std::thread::Builder::new()
                .name(format!("data-loader-{w}"))
                .spawn(move || job.run())
                .context("starting a data loader worker thread")?;
            loader.receivers.push(receiver);
            loader.workers.push(handle);
        }
        Ok(loader)
    }
}

impl<T: Send + 'static> Loader<Option<T>> {
    /// A loader that loads and transforms only the positions `needed` accepts (all of them
    /// when `needed` is `None`), and yields `None` in the others' slots. Batches are cut as
    /// [`Loader::new`] cuts them, so `config.skip_bad` is refused with a `needed`: a skipped
    /// sample shifts every later batch, and a process that did not load it could not know.
    pub fn needing(
        dataset: Arc<dyn Dataset>,
        order: Vec<usize>,
        transform: Transform<T>,
        config: LoaderConfig,
        needed: Option<Needed>,
    ) -> anyhow::Result<Self> {
        if needed.is_some() && config.skip_bad {
            bail!(
                "a loader that loads only some samples cannot skip unreadable ones: a skipped \
                 sample shifts the later batches of the processes that did not load it"
            );
        }
        let transform: Transform<Option<T>> =
            Arc::new(move |image, rng| transform(image, rng).map(Some));
        Self::start(dataset, order, transform, config, needed, Some(|| None))
    }
}

impl<T> Loader<T> {
    /// How many samples were skipped so far because their image could not be loaded
    /// (`skip_bad`).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Stops the workers and waits for them: they notice the flag before their next sample,
    /// or the closed channel when they try to send.
    fn shut_down(&mut self) {
        self.finished = true;
        self.stop.store(true, Ordering::Relaxed);
        self.receivers.clear();
        for handle in self.workers.drain(..) {
            // A worker that panicked has already been reported through its closed channel.
            let _ = handle.join();
        }
    }

    fn fail(&mut self, error: anyhow::Error) -> Option<anyhow::Result<Batch<T>>> {
        self.shut_down();
        Some(Err(error))
    }
}

impl<T> Iterator for Loader<T> {
    type Item = anyhow::Result<Batch<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let size = self.config.batch_size;
        let mut batch = Batch {
            items: Vec::with_capacity(size),
            labels: Vec::with_capacity(size),
            indices: Vec::with_capacity(size),
        };
        while batch.len() < size && self.next_position < self.order.len() {
            let position = self.next_position;
            self.next_position += 1;
            let index = self.order[position];
            let receiver = &self.receivers[position % self.receivers.len()];
            match receiver.recv() {
                Ok(outcome @ (Outcome::Item(_) | Outcome::NotNeeded)) => {
                    let item = match (outcome, self.not_needed) {
                        (Outcome::Item(item), _) => item,
                        (_, Some(not_needed)) => not_needed(),
                        (_, None) => {
                            return self.fail(anyhow::anyhow!(
                                "data loader worker skipped position {position}, but this \
                                 loader needs every position"
                            ))
                        }
                    };
                    batch.items.push(item);
                    batch.labels.push(self.dataset.label(index));
                    batch.indices.push(index);
                }
                Ok(Outcome::LoadFailed(error)) if self.config.skip_bad => {
                    eprintln!("warning: skipping a bad sample: {error:#}");
                    self.skipped += 1;
                }
                Ok(Outcome::LoadFailed(error)) | Ok(Outcome::TransformFailed(error)) => {
                    return self.fail(error);
                }
                Err(_) => {
                    return self.fail(anyhow::anyhow!(
                        "data loader worker {} stopped before delivering position {position} \
                         ({}): it panicked",
                        position % self.receivers.len(),
                        self.dataset.describe(index)
                    ));
                }
            }
        }
        let exhausted = self.next_position >= self.order.len();
        if exhausted {
            self.shut_down();
        }
        if batch.is_empty() || (batch.len() < size && self.config.drop_last) {
            if exhausted && self.batches == 0 && self.skipped > 0 {
                // Skipping is for a few bad files in a large set; a pass that skipped its way
                // to no batch at all would train nothing and report success.
                return Some(Err(anyhow::anyhow!(
                    "--skip-bad left nothing to train on: {} of the {} samples of this pass \
                     could not be loaded, too many for one batch of {size}",
                    self.skipped,
                    self.order.len()
                )));
            }
            return None;
        }
        self.batches += 1;
        Some(Ok(batch))
    }
}

impl<T> Drop for Loader<T> {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// One worker's share of the order.
struct WorkerJob<T> {
    dataset: Arc<dyn Dataset>,
    order: Arc<Vec<usize>>,
    transform: Transform<T>,
    needed: Option<Needed>,
    stop: Arc<AtomicBool>,
    seed: u64,
    first: usize,
    position_offset: usize,
    step: usize,
    sender: SyncSender<Outcome<T>>,
}

impl<T> WorkerJob<T> {
    fn run(self) {
        for position in (self.first..self.order.len()).step_by(self.step) {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let index = self.order[position];
            if self.needed.as_ref().is_some_and(|needed| !needed(position)) {
                if self.sender.send(Outcome::NotNeeded).is_err() {
                    return;
                }
                continue;
            }
            let outcome = match self.dataset.load(index) {
                Err(error) => Outcome::LoadFailed(error.context(format!(
                    "loading sample {index} ({})",
                    self.dataset.describe(index)
                ))),
                Ok(image) => {
                    let mut rng = sample_rng(self.seed, (self.position_offset + position) as u64);
                    match (self.transform)(&image, &mut rng) {
                        Ok(item) => Outcome::Item(item),
                        Err(error) => Outcome::TransformFailed(error.context(format!(
                            "transforming sample {index} ({})",
                            self.dataset.describe(index)
                        ))),
                    }
                }
            };
            // A closed channel means the loader was dropped or finished: stop quietly.
            if self.sender.send(outcome).is_err() {
                return;
            }
        }
    }
}
