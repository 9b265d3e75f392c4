//! Reads of untrusted files, bounded and typed: every file the runtime reads from a user (images,
//! list files, JSON annotations, CIFAR batches, vectors, checkpoints) goes through
//! [`read_file`], which refuses anything that is not a regular file before opening it (a FIFO
//! would block the open forever, a device such as `/dev/zero` would be read until memory runs
//! out) and reads at most the limit of its kind, so a file larger than its format can be is
//! refused with its size before anything of that size is allocated.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

const MIB: u64 = 1 << 20;

/// The default most bytes of a list or JSON index file: a million-line list is ~40 MiB, so
/// this leaves room for fifty times ImageNet while refusing a mistaken multi-gigabyte file.
pub const DEFAULT_INDEX_LIMIT: u64 = 2048 * MIB;

/// The index limit in force. Process-wide because the flag that sets it (`--max-index-mib`)
/// is given once per run and every index read of the run must obey it.
static INDEX_LIMIT: AtomicU64 = AtomicU64::new(DEFAULT_INDEX_LIMIT);

/// Sets the most bytes a list or JSON index file may have, for every read from now on
/// ([`DEFAULT_INDEX_LIMIT`] until set); for data sets whose index is larger than any sane
/// default.
pub fn set_index_limit(bytes: u64) {
    INDEX_LIMIT.store(bytes, Ordering::Relaxed);
}

/// The most bytes a list or JSON index file may have now.
pub fn index_limit() -> u64 {
    INDEX_LIMIT.load(Ordering::Relaxed)
}

/// `bytes` as the user would write the limit: whole MiB when it is a whole number of them.
fn shown_limit(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// What a file is, with the most bytes a sane one of that kind holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A PNG or JPEG; the decoder then bounds its pixels from the header.
    Image,
    /// A list file or an ImageNet-LT JSON annotation file (a million-line list is ~40 MiB);
    /// its limit is [`index_limit`], settable with [`set_index_limit`].
    Index,
    /// One CIFAR binary batch (30 MiB for the largest, CIFAR-100's training file).
    CifarBatch,
    /// A `runtime verify` vectors file.
    Vectors,
    /// A dscl checkpoint (a ResNet-50 stage-1 checkpoint with its key encoder, velocity and a
    /// 65536-key queue is ~0.4 GiB).
    Checkpoint,
}

impl FileKind {
    pub fn limit(self) -> u64 {
        match self {
            FileKind::Image => 256 * MIB,
            FileKind::Index => index_limit(),
            FileKind::CifarBatch => 256 * MIB,
            FileKind::Vectors => 1024 * MIB,
            FileKind::Checkpoint => 16 * 1024 * MIB,
        }
    }

    /// How to raise the limit, for kinds whose limit the user can set.
    fn raise_hint(self) -> &'static str {
        match self {
            FileKind::Index => " (--max-index-mib raises the limit)",
            _ => "",
        }
    }

    /// The name with its article, for "the limit {an image} may have".
    fn a_name(self) -> &'static str {
        match self {
            FileKind::Image => "an image",
            FileKind::Index => "an index file",
            FileKind::CifarBatch => "a CIFAR batch file",
            FileKind::Vectors => "a vectors file",
            FileKind::Checkpoint => "a checkpoint",
        }
    }

    fn name(self) -> &'static str {
        match self {
            FileKind::Image => "image",
            FileKind::Index => "index file",
            FileKind::CifarBatch => "CIFAR batch file",
            FileKind::Vectors => "vectors file",
            FileKind::Checkpoint => "checkpoint",
        }
    }
}

/// The bytes of the regular file at `path` (symbolic links followed), at most `kind`'s limit.
pub fn read_file(path: &Path, kind: FileKind) -> Result<Vec<u8>> {
    let meta = fs::metadata(path)
        .with_context(|| format!("reading {} {}", kind.name(), path.display()))?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a pipe, socket or device)"
        };
        bail!(
            "{} {} is {what}; refusing to read it",
            kind.name(),
            path.display()
        );
    }
    let limit = kind.limit();
    if meta.len() > limit {
        bail!(
            "{} {} is {} bytes, more than the {} {} may have; refusing to read it{}",
            kind.name(),
            path.display(),
            meta.len(),
            shown_limit(limit),
            kind.a_name(),
            kind.raise_hint()
        );
    }
    let file =
        File::open(path).with_context(|| format!("opening {} {}", kind.name(), path.display()))?;
    // The size may change between the check and the read (a file still being written): the
    // read itself stops one byte past the limit.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {} {}", kind.name(), path.display()))?;
    if bytes.len() as u64 > limit {
        bail!(
            "{} {} grew past the {} {} may have while it was read{}",
            kind.name(),
            path.display(),
            shown_limit(limit),
            kind.a_name(),
            kind.raise_hint()
        );
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_reads_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        fs::write(&path, "a.png 0\n").unwrap();
        assert_eq!(read_file(&path, FileKind::Index).unwrap(), b"a.png 0\n");
    }

    #[test]
    fn limits_are_shown_as_set() {
        assert_eq!(shown_limit(DEFAULT_INDEX_LIMIT), "2048 MiB");
        assert_eq!(shown_limit(3 * MIB), "3 MiB");
        assert_eq!(shown_limit(4096), "4096 bytes");
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_file(dir.path(), FileKind::Index).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }
}
