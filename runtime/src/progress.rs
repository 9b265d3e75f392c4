//! Progress of long work: a progress bar with images/s, loss and ETA on a terminal, plain
//! periodic lines otherwise, and a JSON-lines log of every logged step and every epoch.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

/// One phase (a stage of training, an evaluation) with a known number of steps.
pub struct Progress {
    bar: Option<ProgressBar>,
    log: Option<File>,
    phase: String,
    total: u64,
    done: u64,
    images: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// `total` steps; `log` is the JSON-lines file, appended to (so a resumed run continues it).
    pub fn new(phase: &str, total: u64, done: u64, log: Option<&Path>) -> Result<Self> {
        let log = match log {
            Some(path) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening the log {}", path.display()))?,
            ),
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
            log,
            phase: phase.to_string(),
            total,
            done,
            images: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        })
    }

    /// Appends one record to the log.
    pub fn record(&mut self, mut value: Value) -> Result<()> {
        if let Some(file) = &mut self.log {
            if let Value::Object(map) = &mut value {
                map.insert("phase".into(), json!(self.phase));
            }
            writeln!(file, "{value}").context("writing the log")?;
        }
        Ok(())
    }

    /// One step of `images` images done; `fields` (loss, lr, ...) are shown and logged.
    pub fn step(&mut self, images: u64, fields: Value) -> Result<()> {
        self.done += 1;
        self.images += images;
        let rate = self.images as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let shown: Vec<String> = fields
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
            None => {
                // Plain lines for logs and pipes: every 10 s and at the end.
                if self.last_line.elapsed().as_secs_f64() >= 10.0 || self.done == self.total {
                    eprintln!("{} {}/{} {msg}", self.phase, self.done, self.total);
                    self.last_line = Instant::now();
                }
            }
        }
        let mut record = fields;
        if let Value::Object(map) = &mut record {
            map.insert("kind".into(), json!("step"));
            map.insert("images_per_s".into(), json!(rate));
        }
        self.record(record)
    }

    /// Prints a line above the bar (or plainly).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
