//! Progress of long work: a progress bar with images/s, loss and ETA on a terminal, plain
//! periodic lines otherwise, and a JSON-lines log of every logged step and every epoch.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

/// Opens the JSON-lines log for appending. A run killed while writing may have left a last
/// line without its end; that line is ended first, so the next record stays on a line of
/// its own instead of being glued to the broken one (and lost with it to every reader).
/// Keeps the log's records for which `keep` holds and drops the rest (and any line a kill cut
/// short), so a resumed or repeated phase continues the log without duplicate records; returns
/// the records kept. The file is replaced atomically, and only when something is dropped.
pub fn retain_log(path: &Path, keep: impl Fn(&Value) -> bool) -> Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading the log {}", path.display())),
    };
    let lines: Vec<&str> = text.lines().collect();
    let (kept, records): (Vec<&str>, Vec<Value>) = lines
        .iter()
        .filter_map(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .filter(|v| keep(v))
                .map(|v| (*line, v))
        })
        .unzip();
    if kept.len() == lines.len() {
        return Ok(records);
    }
    let tmp = path.with_extension(format!("jsonl.tmp-{}", std::process::id()));
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    std::fs::write(&tmp, body)
        .and_then(|_| std::fs::rename(&tmp, path))
        .with_context(|| format!("rewriting the log {}", path.display()))?;
    Ok(records)
}

fn open_log(path: &Path) -> Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the log {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("reading the log {}", path.display()))?
        .len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))
            .and_then(|_| file.read_exact(&mut last))
            .with_context(|| format!("reading the log {}", path.display()))?;
        if last[0] != b'\n' {
            file.write_all(b"\n")
                .with_context(|| format!("writing the log {}", path.display()))?;
        }
    }
    Ok(file)
}

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
            Some(path) => Some(open_log(path)?),
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
            // One write per record: formatting straight into the file would issue a write per
            // token, and a kill between two of them would leave half a record.
            let mut line = value.to_string();
            line.push('\n');
            file.write_all(line.as_bytes()).context("writing the log")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_after_a_line_cut_short_by_a_kill_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, "{\"kind\":\"step\",\"loss\":1.0}\n{\"kind\":\"st").unwrap();
        let mut progress = Progress::new("test", 2, 1, Some(&path)).unwrap();
        progress
            .record(json!({"kind": "epoch", "loss": 2.0}))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text:?}");
        assert_eq!(lines[1], "{\"kind\":\"st");
        let last: Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(last["loss"], 2.0);
        assert_eq!(last["phase"], "test");
    }
}
