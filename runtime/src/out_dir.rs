//! The output directory: one owner at a time (an advisory lock), never a new run mixed into an
//! old one's files, and created and proven writable with room for a checkpoint before any
//! training starts (a read-only or full disk is reported at once, not after an epoch).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The lock file in every output directory a command writes to; it holds the owner's pid.
pub const LOCK_FILE: &str = ".dscl.lock";

/// A command's hold on its output directory: an advisory lock on [`LOCK_FILE`], released when
/// this is dropped or the process ends, however it ends (the operating system drops the lock
/// with the file descriptor, so a killed run leaves no stale lock behind).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Creates `out` and takes its lock; a second command on the same directory is refused with
/// the first one's process id.
pub fn lock(out: &Path) -> Result<RunLock> {
    fs::create_dir_all(out)
        .with_context(|| format!("creating the output directory {}", out.display()))?;
    let path = out.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            bail!(
                "{} is in use by another run (process {}); wait for it to end or choose another \
                 --out",
                out.display(),
                owner.trim()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    file.set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| write!(file, "{}", std::process::id()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(RunLock { _file: file })
}

/// Refuses to start a new run where one already is: when any of `run_files` exists in `out`,
/// a command without `resume` needs `overwrite`, which removes every file of `replaced`
/// first, so nothing of the old run mixes with the new one.
pub fn claim(
    out: &Path,
    run_files: &[&str],
    replaced: &[&str],
    resume: bool,
    overwrite: bool,
) -> Result<()> {
    if resume && overwrite {
        bail!("--resume continues the run in --out and --overwrite replaces it: give one");
    }
    let found: Vec<&str> = run_files
        .iter()
        .copied()
        .filter(|f| out.join(f).exists())
        .collect();
    if found.is_empty() || resume {
        return Ok(());
    }
    if !overwrite {
        bail!(
            "{} holds a run ({}); continue it with --resume, replace it with --overwrite, or \
             choose another --out",
            out.display(),
            found.join(", ")
        );
    }
    for file in replaced {
        let path = out.join(file);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    Ok(())
}

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
