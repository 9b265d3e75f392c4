//! Checkpoints: safetensors files with torchvision's tensor names, a JSON config record and a
//! checksum, written atomically.
//!
//! - A model's parameters and running statistics are stored under their layout names
//!   (`conv1.weight`, `layer1.0.bn1.running_var`, ...), with torchvision's
//!   `*.num_batches_tracked` counters, so a ResNet-50 backbone loads into torchvision's
//!   `resnet50` with `strict=False` leaving only `fc` missing.
//! - Everything else a run needs to resume exactly (the key encoder, the SGD velocity, the
//!   queue) lives under prefixes torchvision ignores (`key_encoder.`, `optimizer.`, `queue.`).
//! - Metadata (string to string, as safetensors allows) holds the format tag, the run's
//!   config as JSON, counters, and a CRC-32 over every metadata entry (the config, epoch, step,
//!   classes, ...) and every tensor's name, dtype, shape and bytes: a single flipped bit
//!   anywhere in the file is refused, whether it lands in the data, the counters or the
//!   safetensors header (which then no longer parses or no longer matches its data).
//!   Checkpoints of the first format, whose checksum covered the tensors alone, still read.
//! - Writing goes to a temporary file in the same directory, is flushed to disk, then renamed
//!   over the target: a crash leaves either the old checkpoint or the new one, never half.

pub mod schema;

use crate::io::bounded_read::{read_file, FileKind};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use dscl_core::backend::prelude::*;
use dscl_core::nn::{TensorLayout, TensorSet};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// The format tag every checkpoint carries.
pub const FORMAT: &str = "dscl-checkpoint-2";
/// The first format: the same layout, its checksum over the tensors only.
const FORMAT_TENSORS_CHECKED: &str = "dscl-checkpoint-1";
const CHECKSUM_KEY: &str = "dscl.crc32";
const FORMAT_KEY: &str = "dscl.format";

struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// Collects tensors and metadata, then writes them in one atomic step.
#[derive(Default)]
pub struct CheckpointWriter {
    tensors: BTreeMap<String, Entry>,
    metadata: BTreeMap<String, String>,
}

/// CRC-32 over the tensors (name, dtype, shape, bytes, in name order) and, from format 2 on,
/// every metadata entry but the checksum itself (key and value, in key order, each ended by a
/// 0 byte so no two entry lists hash the same bytes).
fn checksum<'a>(
    entries: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
    metadata: Option<&BTreeMap<&'a str, &'a str>>,
) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for (name, dtype, shape, bytes) in entries {
        hasher.update(name.as_bytes());
        hasher.update(format!("{dtype:?}").as_bytes());
        for d in shape {
            hasher.update(&(*d as u64).to_le_bytes());
        }
        hasher.update(bytes);
    }
    for (key, value) in metadata.into_iter().flatten() {
        if *key != CHECKSUM_KEY {
            hasher.update(key.as_bytes());
            hasher.update(&[0]);
            hasher.update(value.as_bytes());
            hasher.update(&[0]);
        }
    }
    hasher.finalize()
}

impl CheckpointWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put_f32(&mut self, name: &str, shape: &[usize], values: &[f32]) -> Result<()> {
        self.put(name, Dtype::F32, shape, f32_le_bytes(values))
    }

    pub fn put_u32(&mut self, name: &str, shape: &[usize], values: &[u32]) -> Result<()> {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.put(name, Dtype::U32, shape, bytes)
    }

    pub fn put_i64_scalar(&mut self, name: &str, value: i64) -> Result<()> {
        self.put(name, Dtype::I64, &[], value.to_le_bytes().to_vec())
    }

    fn put(&mut self, name: &str, dtype: Dtype, shape: &[usize], bytes: Vec<u8>) -> Result<()> {
        let elements: usize = shape.iter().product();
        if elements * dtype.bitsize() / 8 != bytes.len() {
            bail!(
                "checkpoint tensor `{name}`: {} bytes for shape {shape:?}",
                bytes.len()
            );
        }
        if self.tensors.contains_key(name) {
            bail!("checkpoint tensor `{name}` written twice");
        }
        self.tensors.insert(
            name.to_string(),
            Entry {
                dtype,
                shape: shape.to_vec(),
                bytes,
            },
        );
        Ok(())
    }

    pub fn put_meta(&mut self, key: &str, value: impl Into<String>) {
        self.metadata.insert(key.to_string(), value.into());
    }

    /// Downloads every tensor of `set` and stores it as `prefix + name`.
    pub fn put_set<B: Backend<Elem = f32>>(
        &mut self,
        backend: &B,
        layout: &TensorLayout,
        set: &TensorSet<B>,
        prefix: &str,
    ) -> Result<()> {
        set.check_layout(layout)?;
        for (i, spec) in layout.specs().iter().enumerate() {
            let mut host = vec![0.0f32; spec.len()];
            backend.download(&set.buffers()[i], 0, &mut host)?;
            self.put_f32(&format!("{prefix}{}", spec.name), spec.dims(), &host)?;
        }
        Ok(())
    }

    /// Writes the file atomically: a temporary sibling, flushed to disk, renamed over `path`.
    pub fn write_atomic(mut self, path: &Path) -> Result<()> {
        self.metadata.insert(FORMAT_KEY.into(), FORMAT.into());
        let metadata: BTreeMap<&str, &str> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let sum = checksum(
            self.tensors
                .iter()
                .map(|(n, e)| (n.as_str(), e.dtype, e.shape.as_slice(), e.bytes.as_slice())),
            Some(&metadata),
        );
        self.metadata
            .insert(CHECKSUM_KEY.into(), format!("{sum:08x}"));
        let views: Vec<(String, TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(n, e)| {
                TensorView::new(e.dtype, e.shape.clone(), &e.bytes)
                    .map(|v| (n.clone(), v))
                    .map_err(|err| anyhow!("checkpoint tensor `{n}`: {err}"))
            })
            .collect::<Result<_>>()?;
        let metadata: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        let bytes = safetensors::tensor::serialize(views, Some(metadata))
            .map_err(|e| anyhow!("serialising checkpoint: {e}"))?;

        let dir = parent_dir(path);
        let tmp = temporary_path(path, std::process::id())?;
        let result = (|| -> Result<()> {
            let mut file =
                File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            file.write_all(&bytes)
                .with_context(|| format!("writing {}", tmp.display()))?;
            file.sync_all()
                .with_context(|| format!("flushing {}", tmp.display()))?;
            fs::rename(&tmp, path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
            // Make the rename itself durable.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The prefix of every temporary file a checkpoint at `path` is written through.
fn temporary_prefix(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("checkpoint path {} has no file name", path.display()))?;
    Ok(format!(".{}.tmp-", name.to_string_lossy()))
}

/// The temporary sibling through which process `pid` writes the checkpoint at `path`
/// ([`CheckpointWriter::write_atomic`]): while it exists, a write is under way or was cut
/// short. Never a checkpoint to read.
pub fn temporary_path(path: &Path, pid: u32) -> Result<PathBuf> {
    Ok(parent_dir(path).join(format!("{}{pid}", temporary_prefix(path)?)))
}

/// Removes the temporary files that writes of the checkpoint at `path` by other processes
/// left behind, and returns how many. A process killed between creating its temporary file
/// and renaming it leaves one the size of a checkpoint, and the next write uses a new name
/// (the process id differs), so without this every crash would keep a checkpoint's worth of
/// disk. Call it before training, when no other run writes to the same directory.
pub fn remove_stale_temporaries(path: &Path) -> Result<usize> {
    let dir = parent_dir(path);
    let prefix = temporary_prefix(path)?;
    let own = temporary_path(path, std::process::id())?;
    if !dir.is_dir() {
        return Ok(0);
    }
    let mut removed = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let stale = entry.file_name().to_string_lossy().starts_with(&prefix) && entry.path() != own;
        if stale {
            fs::remove_file(entry.path()).with_context(|| {
                format!(
                    "removing {}, left by an interrupted checkpoint write",
                    entry.path().display()
                )
            })?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn f32_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A checkpoint read from disk, its checksum verified.
pub struct Checkpoint {
    path: PathBuf,
    bytes: Vec<u8>,
    metadata: HashMap<String, String>,
}

impl Checkpoint {
    /// Reads and verifies `path`: a safetensors file of this format whose checksum matches.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = read_file(path, FileKind::Checkpoint)?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| {
            anyhow!(
                "{} is not a readable checkpoint (safetensors header: {e})",
                path.display()
            )
        })?;
        let metadata = header.metadata().clone().unwrap_or_default();
        match metadata.get(FORMAT_KEY) {
            Some(f) if f == FORMAT || f == FORMAT_TENSORS_CHECKED => {}
            Some(f) => bail!(
                "{}: checkpoint format `{f}`, expected `{FORMAT}`",
                path.display()
            ),
            None => bail!("{}: not a dscl checkpoint (no format tag)", path.display()),
        }
        let ckpt = Checkpoint {
            path: path.to_path_buf(),
            bytes,
            metadata,
        };
        ckpt.verify()?;
        Ok(ckpt)
    }

    fn tensors(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes)
            .map_err(|e| anyhow!("{}: corrupt checkpoint: {e}", self.path.display()))
    }

    fn verify(&self) -> Result<()> {
        let st = self.tensors()?;
        let mut names: Vec<&str> = st.names();
        names.sort();
        let views: Vec<(&str, TensorView<'_>)> = names
            .iter()
            .map(|&n| st.tensor(n).map(|v| (n, v)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| anyhow!("{}: corrupt checkpoint: {e}", self.path.display()))?;
        let metadata: BTreeMap<&str, &str> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let covers_metadata = metadata.get(FORMAT_KEY) != Some(&FORMAT_TENSORS_CHECKED);
        let sum = checksum(
            views
                .iter()
                .map(|(n, v)| (*n, v.dtype(), v.shape(), v.data())),
            covers_metadata.then_some(&metadata),
        );
        let stored = self
            .metadata
            .get(CHECKSUM_KEY)
            .ok_or_else(|| anyhow!("{}: checkpoint has no checksum", self.path.display()))?;
        if *stored != format!("{sum:08x}") {
            bail!(
                "{}: checkpoint is corrupt (checksum {stored} stored, {sum:08x} computed); \
                 refusing to use it",
                self.path.display()
            );
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn meta(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("{}: checkpoint has no `{key}` record", self.path.display()))
    }

    pub fn has(&self, name: &str) -> Result<bool> {
        Ok(self.tensors()?.names().contains(&name))
    }

    fn view(&self, name: &str, dtype: Dtype) -> Result<(Vec<usize>, Vec<u8>)> {
        let st = self.tensors()?;
        let v = st
            .tensor(name)
            .map_err(|_| anyhow!("{}: checkpoint has no tensor `{name}`", self.path.display()))?;
        if v.dtype() != dtype {
            bail!(
                "{}: tensor `{name}` is {:?}, expected {dtype:?}",
                self.path.display(),
                v.dtype()
            );
        }
        Ok((v.shape().to_vec(), v.data().to_vec()))
    }

    pub fn get_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (shape, bytes) = self.view(name, Dtype::F32)?;
        let values = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((shape, values))
    }

    pub fn get_u32(&self, name: &str) -> Result<(Vec<usize>, Vec<u32>)> {
        let (shape, bytes) = self.view(name, Dtype::U32)?;
        let values = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((shape, values))
    }

    /// Uploads `prefix + name` of every tensor of `layout` into `set`, checking shapes.
    pub fn get_set<B: Backend<Elem = f32>>(
        &self,
        backend: &B,
        layout: &TensorLayout,
        set: &mut TensorSet<B>,
        prefix: &str,
    ) -> Result<()> {
        set.check_layout(layout)?;
        for (i, spec) in layout.specs().iter().enumerate() {
            let name = format!("{prefix}{}", spec.name);
            let (shape, values) = self.get_f32(&name)?;
            if shape != spec.dims() {
                bail!(
                    "{}: tensor `{name}` has shape {shape:?}, the model needs {:?}",
                    self.path.display(),
                    spec.dims()
                );
            }
            backend.upload(&mut set.buffers_mut()[i], 0, &values)?;
        }
        Ok(())
    }
}

/// Adds torchvision's `num_batches_tracked` counter for every batch norm of a state layout
/// (the tensors named `*.running_mean`).
pub fn put_batch_counters(
    writer: &mut CheckpointWriter,
    state: &TensorLayout,
    prefix: &str,
    count: i64,
) -> Result<()> {
    for spec in state.specs() {
        if let Some(bn) = spec.name.strip_suffix(".running_mean") {
            writer.put_i64_scalar(&format!("{prefix}{bn}.num_batches_tracked"), count)?;
        }
    }
    Ok(())
}
