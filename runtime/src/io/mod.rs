//! The files a run reads and writes, each format's reader beside its writer: checkpoints, the
//! output directory, the training log and the progress shown while it grows, reports, the
//! loss-vector files of `runtime verify`, and the size-bounded reading every input file goes
//! through.

pub mod bounded_read;
pub mod checkpoint;
pub mod log;
pub mod out_dir;
pub mod progress;
pub mod vectors;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

/// Writes `report` as pretty JSON to `out/name`, atomically (a temporary file renamed).
pub fn write_report(out: &Path, name: &str, report: &impl Serialize) -> Result<PathBuf> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(name);
    let tmp = out.join(format!(".{name}.tmp-{}", std::process::id()));
    fs::write(&tmp, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
