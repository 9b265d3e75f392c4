//! The output directory: created, and proven writable with room for a checkpoint, before any
//! training starts (a read-only or full disk is reported at once, not after an epoch).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Creates `out` and writes then removes a probe file of `bytes` bytes in it.
pub fn prepare(out: &Path, bytes: usize) -> Result<()> {
    fs::create_dir_all(out)
        .with_context(|| format!("creating the output directory {}", out.display()))?;
    let probe = out.join(format!(".write-probe-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = File::create(&probe)?;
        let chunk = vec![0u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            f.write_all(&chunk[..n])?;
            left -= n;
        }
        f.sync_all()?;
        Ok(())
    })();
    let _ = fs::remove_file(&probe);
    result.with_context(|| {
        format!(
            "the output directory {} is not writable with {} MiB free for checkpoints",
            out.display(),
            bytes.div_ceil(1 << 20)
        )
    })
}
