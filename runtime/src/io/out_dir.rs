//! The output directory: one owner at a time (an advisory lock), never a new run mixed into an
//! old one's files, and created and proven writable with room for its checkpoints before any
//! training starts (a read-only or full disk, or a file-size limit below a checkpoint, is
//! reported at once, not after an epoch).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The lock file in every output directory a command writes to; it holds the owner's pid.
pub const LOCK_FILE: &str = ".dscl.lock";

/// Stage 1's checkpoint (either loss), which `--resume` continues from.
pub const STAGE1_FILE: &str = "stage1.safetensors";
pub use super::log::LOG_FILE;
/// Stage 2's classifier.
pub const LINEAR_FILE: &str = "linear.safetensors";
/// The per-epoch test-set evaluations of `--eval-every-epoch`.
pub const EPOCHS_FILE: &str = "linear_epochs.json";
/// The final classifier's test-set metrics.
pub const METRICS_FILE: &str = "metrics.json";
/// The loss curve and per-class accuracy of `runtime plot` (and `run`).
pub const PLOT_FILE: &str = "plot.svg";

/// What a stage-1 run (`train`, `run`) leaves in its output directory: a directory holding any
/// of them holds a run, and `--overwrite` removes them all.
pub const RUN_FILES: &[&str] = &[
    STAGE1_FILE,
    LOG_FILE,
    LINEAR_FILE,
    EPOCHS_FILE,
    METRICS_FILE,
    PLOT_FILE,
];

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

/// Creates `out` and proves it ready for `bytes` of checkpoints, all of them taken as one file
/// against the file-size limit (the strictest reading; callers that know their largest file
/// use [`prepare_files`]).
pub fn prepare(out: &Path, bytes: usize) -> Result<()> {
    let bytes = bytes as u64;
    prepare_files(out, bytes, bytes)
}

/// Creates `out` and proves, without writing more than a few bytes, that a command can write
/// `total` bytes there with no file larger than `largest_file`: a small probe file shows the
/// directory writable, its file system's free space (`statvfs`) must hold `total`, and the
/// process's file-size limit (`ulimit -f`) must admit `largest_file`. Each refusal names the
/// directory and the cause.
pub fn prepare_files(out: &Path, total: u64, largest_file: u64) -> Result<()> {
    fs::create_dir_all(out)
        .with_context(|| format!("creating the output directory {}", out.display()))?;
    write_probe(out, 8)
        .with_context(|| format!("the output directory {} is not writable", out.display()))?;
    check_room(out, total, largest_file)
}

/// Megabytes to one decimal, so a limit below 1 MiB still reads as what it is.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

#[cfg(unix)]
fn check_room(out: &Path, total: u64, largest_file: u64) -> Result<()> {
    use rustix::process::{getrlimit, Resource};
    match rustix::fs::statvfs(out) {
        Ok(vfs) => {
            // f_frsize is the unit of the block counts; some systems leave it 0 and count in
            // f_bsize.
            let unit = if vfs.f_frsize > 0 {
                vfs.f_frsize
            } else {
                vfs.f_bsize
            };
            let free = vfs.f_bavail.saturating_mul(unit);
            if free < total {
                bail!(
                    "the output directory {} has {} free, below the {} its checkpoints need; \
                     free some space or choose another --out",
                    out.display(),
                    mib(free),
                    mib(total)
                );
            }
        }
        // A file system that cannot report its space (some network and FUSE mounts) is
        // proven the old way, by writing.
        Err(_) => write_probe(out, total).with_context(|| {
            format!(
                "the output directory {} is not writable with {} free for checkpoints",
                out.display(),
                mib(total)
            )
        })?,
    }
    // Writing past the limit fails with EFBIG (the runtime ignores SIGXFSZ), after an epoch.
    if let Some(limit) = getrlimit(Resource::Fsize).current {
        if limit < largest_file {
            bail!(
                "the file-size limit (ulimit -f) is {}, below the {} a checkpoint in the output \
                 directory {} needs; raise it (ulimit -f unlimited)",
                mib(limit),
                mib(largest_file),
                out.display()
            );
        }
    }
    Ok(())
}

/// Without statvfs, the room is proven by writing it.
#[cfg(not(unix))]
fn check_room(out: &Path, total: u64, _largest_file: u64) -> Result<()> {
    write_probe(out, total).with_context(|| {
        format!(
            "the output directory {} is not writable with {} free for checkpoints",
            out.display(),
            mib(total)
        )
    })
}

/// Writes, flushes and removes a probe file of `bytes` bytes in `out`.
fn write_probe(out: &Path, bytes: u64) -> Result<()> {
    let probe = out.join(format!(".write-probe-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = File::create(&probe)?;
        let chunk = vec![0u8; bytes.min(1 << 20) as usize];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
        Ok(())
    })();
    let _ = fs::remove_file(&probe);
    result
}
