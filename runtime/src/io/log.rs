//! The training log, `OUT/log.jsonl`: one JSON object a line, a record for every step and one
//! at every epoch's end, each with the phase that wrote it. A record's keys are in alphabetical
//! order: it goes through serde_json's map, which sorts them, so a line does not depend on the
//! order of a record's fields.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

pub const LOG_FILE: &str = "log.jsonl";

/// The phases that log, by the name their records carry (and their progress bars show).
pub mod phase {
    /// Stage 1 with a contrastive loss (DSCL or SupCon).
    pub const STAGE1: &str = "stage1";
    /// Stage 1 of the cross-entropy baseline.
    pub const STAGE1_CE: &str = "stage1-ce";
    /// Stage 2.
    pub const LINEAR: &str = "linear";
    /// A test-set pass (shown, never logged).
    pub const EVAL: &str = "eval";
}

/// The log, open for appending the records of one phase.
pub struct Log {
    file: File,
    phase: String,
}

impl Log {
    /// Opens the log at `path` for appending. A run killed while writing may have left a last
    /// line without its end; that line is ended first, so the next record stays on a line of
    /// its own instead of being glued to the broken one (and lost with it to every reader).
    pub fn open(path: &Path, phase: &str) -> Result<Log> {
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
        Ok(Log {
            file,
            phase: phase.to_string(),
        })
    }

    /// Appends `record` with this log's phase.
    pub fn append(&mut self, record: &impl Serialize) -> Result<()> {
        let line = Line {
            record,
            phase: &self.phase,
        };
        let mut line = serde_json::to_value(&line)
            .context("writing the log")?
            .to_string();
        line.push('\n');
        // One write per record: formatting straight into the file would issue a write per
        // token, and a kill between two of them would leave half a record.
        self.file
            .write_all(line.as_bytes())
            .context("writing the log")
    }
}

#[derive(Serialize)]
struct Line<'a, T> {
    #[serde(flatten)]
    record: &'a T,
    phase: &'a str,
}

/// A record read back from the log, as far as continuing it needs: each field as the line
/// holds it, `None` where it is missing or of another type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogRecord {
    pub phase: Option<String>,
    pub kind: Option<String>,
    pub epoch: Option<u64>,
    pub global_step: Option<u64>,
    pub loss: Option<f64>,
}

impl LogRecord {
    fn of(line: &Value) -> LogRecord {
        LogRecord {
            phase: line["phase"].as_str().map(str::to_string),
            kind: line["kind"].as_str().map(str::to_string),
            epoch: line["epoch"].as_u64(),
            global_step: line["global_step"].as_u64(),
            loss: line["loss"].as_f64(),
        }
    }

    pub fn is(&self, phase: &str, kind: &str) -> bool {
        self.phase.as_deref() == Some(phase) && self.kind.as_deref() == Some(kind)
    }
}

/// Keeps the log's records for which `keep` holds and drops the rest (and any line a kill cut
/// short), so a resumed or repeated phase continues the log without duplicate records; returns
/// the records kept. The file is replaced atomically, and only when something is dropped.
pub fn retain(path: &Path, keep: impl Fn(&LogRecord) -> bool) -> Result<Vec<LogRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading the log {}", path.display())),
    };
    let lines: Vec<&str> = text.lines().collect();
    let (kept, records): (Vec<&str>, Vec<LogRecord>) = lines
        .iter()
        .filter_map(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .map(|v| LogRecord::of(&v))
                .filter(|r| keep(r))
                .map(|r| (*line, r))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    #[serde(tag = "kind", rename = "epoch")]
    struct Epoch {
        loss: f64,
        epoch: usize,
    }

    #[test]
    fn a_record_after_a_line_cut_short_by_a_kill_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, "{\"kind\":\"step\",\"loss\":1.0}\n{\"kind\":\"st").unwrap();
        let mut log = Log::open(&path, "test").unwrap();
        log.append(&Epoch {
            loss: 2.0,
            epoch: 1,
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text:?}");
        assert_eq!(lines[1], "{\"kind\":\"st");
        // Keys in alphabetical order, whatever the record's field order.
        assert_eq!(
            lines[2],
            r#"{"epoch":1,"kind":"epoch","loss":2.0,"phase":"test"}"#
        );
        let kept = retain(&path, |r| r.is("test", "epoch")).unwrap();
        assert_eq!(
            kept,
            vec![LogRecord {
                phase: Some("test".into()),
                kind: Some("epoch".into()),
                epoch: Some(1),
                global_step: None,
                loss: Some(2.0),
            }]
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", lines[2])
        );
    }
}
