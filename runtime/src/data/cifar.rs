//! CIFAR-10 and CIFAR-100 in their binary distribution format.
//!
//! Each record is the label byte(s) followed by 3072 pixel bytes: the 32x32 red plane, then
//! green, then blue, rows top to bottom — already the planar layout of [`Image`]. The whole
//! split is read into memory at open (150 MB for the training set) because decoding is then
//! a byte-to-float copy, and per-record file reads would cost more than that memory.

use crate::io::bounded_read::{read_file, FileKind};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::Image;
use super::{Dataset, Split};

const SIDE: usize = 32;
const PIXELS: usize = 3 * SIDE * SIDE;

/// Which CIFAR: decides the files, the label bytes and the number of classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CifarKind {
    /// `data_batch_1.bin`..`data_batch_5.bin` (train), `test_batch.bin` (test); one label
    /// byte per record; 10 classes.
    Cifar10,
    /// `train.bin`, `test.bin`; a coarse and a fine label byte per record (the fine label is
    /// used); 100 classes.
    Cifar100,
}

impl CifarKind {
    pub fn num_classes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 10,
            CifarKind::Cifar100 => 100,
        }
    }

    /// Bytes before the pixels in each record.
    fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            CifarKind::Cifar100 => 2,
        }
    }

    fn files(self, split: Split) -> Vec<String> {
        match (self, split) {
            (CifarKind::Cifar10, Split::Train) => {
                (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
            }
            (CifarKind::Cifar10, Split::Test) => vec!["test_batch.bin".into()],
            (CifarKind::Cifar100, Split::Train) => vec!["train.bin".into()],
            (CifarKind::Cifar100, Split::Test) => vec!["test.bin".into()],
        }
    }

    /// Whether `dir` holds any file of this kind.
    fn present_in(self, dir: &Path) -> bool {
        [Split::Train, Split::Test]
            .iter()
            .flat_map(|&s| self.files(s))
            .any(|f| dir.join(f).is_file())
    }
}

/// One split of CIFAR-10 or CIFAR-100, held in memory.
#[derive(Clone, Debug)]
pub struct CifarBinary {
    kind: CifarKind,
    split: Split,
    pixels: Vec<u8>,
    labels: Vec<u32>,
    /// Each file read and the index of its first record, for [`Dataset::describe`].
    files: Vec<(PathBuf, usize)>,
}

impl CifarBinary {
    /// Reads `split` from `dir`, telling CIFAR-10 from CIFAR-100 by the files present. `dir`
    /// may also be the folder the archive was extracted into, holding `cifar-10-batches-bin`
    /// or `cifar-100-binary`. A missing file, a truncated record or an out-of-range label is
    /// an error naming the file (and record).
    pub fn open(dir: &Path, split: Split) -> anyhow::Result<Self> {
        let (dir, kind) = detect(dir)?;
        let mut data = CifarBinary::empty(kind, split);
        for name in kind.files(split) {
            let path = dir.join(&name);
            let bytes = read_file(&path, FileKind::CifarBatch)
                .with_context(|| format!("reading the CIFAR {split} split"))?;
            data.append_file(&bytes, &path)?;
        }
        Ok(data)
    }

    /// Parses one CIFAR binary file already in memory (`data_batch_1.bin`, `test.bin`, ...)
    /// as `kind`; `file` only names the source in errors and descriptions. The same checks as
    /// [`Self::open`]: whole records, at least one, every label in range.
    pub fn parse(bytes: &[u8], kind: CifarKind, split: Split, file: &Path) -> anyhow::Result<Self> {
        let mut data = CifarBinary::empty(kind, split);
        data.append_file(bytes, file)?;
        Ok(data)
    }

    fn empty(kind: CifarKind, split: Split) -> Self {
        CifarBinary {
            kind,
            split,
            pixels: Vec::new(),
            labels: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Appends the records of one file's `bytes`; `path` names it in errors.
    fn append_file(&mut self, bytes: &[u8], path: &Path) -> anyhow::Result<()> {
        let kind = self.kind;
        let record = kind.label_bytes() + PIXELS;
        let complete = bytes.len() / record;
        if !bytes.len().is_multiple_of(record) {
            bail!(
                "{}: record {complete} is truncated ({} of {record} bytes); the file \
                 should hold whole {record}-byte records",
                path.display(),
                bytes.len() % record
            );
        }
        if complete == 0 {
            bail!("{}: the file holds no record", path.display());
        }
        self.files.push((path.to_path_buf(), self.labels.len()));
        self.pixels.reserve(complete * PIXELS);
        self.labels.reserve(complete);
        for (r, rec) in bytes.chunks_exact(record).enumerate() {
            // CIFAR-100 records are (coarse, fine): the fine label is the last label byte.
            let label = rec[kind.label_bytes() - 1];
            if label as usize >= kind.num_classes() {
                bail!(
                    "{}: record {r} has label {label}, out of range for {kind:?} ({} \
                     classes)",
                    path.display(),
                    kind.num_classes()
                );
            }
            self.labels.push(label as u32);
            self.pixels.extend_from_slice(&rec[kind.label_bytes()..]);
        }
        Ok(())
    }

    pub fn kind(&self) -> CifarKind {
        self.kind
    }

    pub fn split(&self) -> Split {
        self.split
    }

    /// The file holding sample `i` and the record's index inside it.
    fn locate(&self, i: usize) -> (&Path, usize) {
        let f = self.files.partition_point(|(_, first)| *first <= i) - 1;
        let (path, first) = &self.files[f];
        (path, i - first)
    }
}

/// Finds the directory holding the CIFAR files under `dir` and which CIFAR it is.
fn detect(dir: &Path) -> anyhow::Result<(PathBuf, CifarKind)> {
    let candidates = [
        dir.to_path_buf(),
        dir.join("cifar-10-batches-bin"),
        dir.join("cifar-100-binary"),
    ];
    for candidate in candidates {
        let ten = CifarKind::Cifar10.present_in(&candidate);
        let hundred = CifarKind::Cifar100.present_in(&candidate);
        match (ten, hundred) {
            (true, true) => bail!(
                "{} holds both CIFAR-10 (data_batch_*.bin / test_batch.bin) and CIFAR-100 \
                 (train.bin / test.bin) files; put them in separate directories",
                candidate.display()
            ),
            (true, false) => return Ok((candidate, CifarKind::Cifar10)),
            (false, true) => return Ok((candidate, CifarKind::Cifar100)),
            (false, false) => {}
        }
    }
    bail!(
        "{} holds no CIFAR binary files: expected data_batch_1..5.bin and test_batch.bin \
         (CIFAR-10) or train.bin and test.bin (CIFAR-100)",
        dir.display()
    )
}

impl Dataset for CifarBinary {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn num_classes(&self) -> usize {
        self.kind.num_classes()
    }

    fn labels(&self) -> &[u32] {
        &self.labels
    }

    fn load(&self, i: usize) -> anyhow::Result<Image> {
        let bytes = &self.pixels[i * PIXELS..(i + 1) * PIXELS];
        Ok(Image {
            width: SIDE,
            height: SIDE,
            pixels: bytes.iter().map(|&b| b as f32 / 255.0).collect(),
        })
    }

    fn describe(&self, i: usize) -> String {
        let (path, record) = self.locate(i);
        format!("{} record {record}", path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(labels: &[u8], fill: u8) -> Vec<u8> {
        let mut r = labels.to_vec();
        r.resize(labels.len() + PIXELS, fill);
        r
    }

    fn parse(bytes: &[u8], kind: CifarKind) -> anyhow::Result<CifarBinary> {
        CifarBinary::parse(bytes, kind, Split::Train, Path::new("batch.bin"))
    }

    #[test]
    fn parses_records_in_memory() {
        let mut bytes = record(&[3], 255);
        bytes.extend(record(&[9], 0));
        let data = parse(&bytes, CifarKind::Cifar10).unwrap();
        assert_eq!(data.labels(), &[3, 9]);
        assert_eq!(data.load(0).unwrap().pixels, vec![1.0; PIXELS]);
        assert_eq!(data.describe(1), "batch.bin record 1");

        let data = parse(&record(&[4, 77], 51), CifarKind::Cifar100).unwrap();
        assert_eq!(data.labels(), &[77], "the fine label is used");
        assert_eq!(data.load(0).unwrap().pixels[0], 0.2);
    }

    #[test]
    fn refuses_empty_truncated_and_out_of_range_input() {
        let err = |bytes: &[u8], kind| format!("{:#}", parse(bytes, kind).unwrap_err());
        assert!(err(&[], CifarKind::Cifar10).contains("holds no record"));
        let truncated = &record(&[1], 0)[..100];
        let e = err(truncated, CifarKind::Cifar10);
        assert!(e.contains("batch.bin: record 0 is truncated"), "{e}");
        let e = err(&record(&[10], 0), CifarKind::Cifar10);
        assert!(e.contains("record 0 has label 10"), "{e}");
        let e = err(&record(&[0, 100], 0), CifarKind::Cifar100);
        assert!(e.contains("record 0 has label 100"), "{e}");
    }
}
