//! Progress of long work: a progress bar with images/s, loss and ETA on a terminal, plain
//! periodic lines otherwise, and each step and epoch appended to the [log](super::log).

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::log::Log;

/// One phase (a stage of training, an evaluation) with a known number of steps.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Nothing shown: a rank other than 0 of a distributed run, whose progress rank 0 shows.
    silent: bool,
    log: Option<Log>,
    phase: String,
    total: u64,
    done: u64,
    images: u64,
    started: Instant,
    last_line: Instant,
}

/// A step's line in the log: what the step reports, its kind and the rate so far.
#[derive(Serialize)]
#[serde(tag = "kind", rename = "step")]
struct StepLine<'a, T> {
    #[serde(flatten)]
    fields: &'a T,
    images_per_s: f64,
}

/// The fields of a step that reports nothing (a test-set pass).
#[derive(Serialize)]
struct Nothing {}

impl Progress {
    /// `total` steps, `done` of them already; `log` is the JSON-lines file, appended to (so a
    /// resumed run continues it).
    pub fn new(phase: &str, total: u64, done: u64, log: Option<&Path>) -> Result<Self> {
        let log = match log {
            Some(path) => Some(Log::open(path, phase)?),
            None => None,
        };
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(phase.to_string());
            bar.set_position(done);
            bar
        });
        Ok(Progress {
            bar,
            silent: false,
            log,
            phase: phase.to_string(),
            total,
            done,
            images: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        })
    }

    /// The same progress, shown nowhere (a rank other than 0 of a distributed run).
    pub fn silenced(mut self) -> Self {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.silent = true;
        self
    }

    /// Appends one record to the log.
    pub fn record(&mut self, record: &impl Serialize) -> Result<()> {
        match &mut self.log {
            Some(log) => log.append(record),
            None => Ok(()),
        }
    }

    /// One step of `images` images done; `fields` (loss, lr, ...) are shown and logged.
    pub fn step(&mut self, images: u64, fields: &impl Serialize) -> Result<()> {
        self.done += 1;
        self.images += images;
        let rate = self.images as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let shown: Vec<String> = serde_json::to_value(fields)?
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| *k != "epoch" && *k != "step")
                    .map(|(k, v)| match v.as_f64() {
                        Some(x) => format!("{k} {x:.4}"),
                        None => format!("{k} {v}"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let msg = format!("{rate:.1} img/s {}", shown.join(" "));
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.done);
                bar.set_message(msg);
            }
            None if self.silent => {}
            None => {
                // Plain lines for logs and pipes: every 10 s and at the end.
                if self.last_line.elapsed().as_secs_f64() >= 10.0 || self.done == self.total {
                    eprintln!("{} {}/{} {msg}", self.phase, self.done, self.total);
                    self.last_line = Instant::now();
                }
            }
        }
        self.record(&StepLine {
            fields,
            images_per_s: rate,
        })
    }

    /// One step of `images` images that reports nothing but its progress.
    pub fn tick(&mut self, images: u64) -> Result<()> {
        self.step(images, &Nothing {})
    }

    /// Prints a line above the bar (or plainly).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.silent => {}
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
