//! The list-file data set: one `relative/path label` per line (the ImageNet-LT and Places-LT
//! `*_train.txt` / `*_test.txt` files), resolved against a root directory.

use crate::bounded_read::{read_file, FileKind};
use std::path::{Path, PathBuf};

use anyhow::bail;

use super::decode::decode_image_file;
use super::path_table::PathTable;
use super::Dataset;
use crate::image::Image;

/// Images listed in a text file, one `relative/path label` per line.
///
/// Blank lines and lines starting with `#` are skipped. The label is the last
/// whitespace-separated field, so paths may contain spaces. Indexing reads only the list: no
/// image is opened until [`Dataset::load`], so a list of a million images indexes in about a
/// second and holds only the paths and labels.
#[derive(Clone, Debug)]
pub struct ListFile {
    list: PathBuf,
    table: PathTable,
    /// The 1-based line of each entry in the list, for error messages.
    lines: Vec<u32>,
    num_classes: usize,
}

impl ListFile {
    /// Reads the list at `list`, resolving its paths against `root`. With `num_classes`
    /// given, every label must be below it; otherwise the number of classes is the largest
    /// label + 1. Errors name the list file and line.
    pub fn open(list: &Path, root: &Path, num_classes: Option<usize>) -> anyhow::Result<Self> {
        let bytes = read_file(list, FileKind::Index)?;
        Self::parse(&bytes, list, root, num_classes)
    }

    /// Parses list text already in memory; `list` is only used to name the source in errors
    /// and descriptions.
    pub fn parse(
        bytes: &[u8],
        list: &Path,
        root: &Path,
        num_classes: Option<usize>,
    ) -> anyhow::Result<Self> {
        let mut table = PathTable::new(root);
        // A typical line is ~40 bytes; reserving from that avoids most regrowth.
        table.reserve(bytes.len() / 40 + 1, bytes.len());
        let mut lines = Vec::with_capacity(bytes.len() / 40 + 1);
        for (n, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line_no = n + 1;
            let at = || format!("{}:{line_no}", list.display());
            let text = std::str::from_utf8(raw)
                .map_err(|_| anyhow::anyhow!("{}: the line is not valid UTF-8", at()))?;
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let Some((path, label)) = text.rsplit_once(|c: char| c.is_whitespace()) else {
                bail!(
                    "{}: missing label: expected `relative/path label`, found `{text}`",
                    at()
                );
            };
            let label: u32 = label.parse().map_err(|_| {
                anyhow::anyhow!(
                    "{}: the label `{label}` is not a non-negative integer",
                    at()
                )
            })?;
            if let Some(classes) = num_classes {
                if label as usize >= classes {
                    bail!(
                        "{}: label {label} is out of range: there are {classes} classes \
                         (labels 0..{classes})",
                        at()
                    );
                }
            }
            let line_no =
                u32::try_from(line_no).map_err(|_| anyhow::anyhow!("{}: too many lines", at()))?;
            table.push(path.trim_end(), label);
            lines.push(line_no);
        }
        if table.len() == 0 {
            bail!("list file {} has no entries", list.display());
        }
        let num_classes =
            num_classes.unwrap_or_else(|| table.max_label().map_or(0, |m| m as usize + 1));
        Ok(ListFile {
            list: list.to_path_buf(),
            table,
            lines,
            num_classes,
        })
    }

    /// The path of sample `i`, resolved against the root.
    pub fn path(&self, i: usize) -> PathBuf {
        self.table.path(i)
    }

    /// The 1-based line of sample `i` in the list file.
    pub fn line(&self, i: usize) -> usize {
        self.lines[i] as usize
    }
}

impl Dataset for ListFile {
    fn len(&self) -> usize {
        self.table.len()
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn labels(&self) -> &[u32] {
        self.table.labels()
    }

    fn load(&self, i: usize) -> anyhow::Result<Image> {
        decode_image_file(&self.table.path(i))
    }

    fn describe(&self, i: usize) -> String {
        format!(
            "{} (listed at {}:{})",
            self.table.path(i).display(),
            self.list.display(),
            self.lines[i]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, classes: Option<usize>) -> anyhow::Result<ListFile> {
        ListFile::parse(
            text.as_bytes(),
            Path::new("train.txt"),
            Path::new("/root"),
            classes,
        )
    }

    fn err(text: &str, classes: Option<usize>) -> String {
        format!("{:#}", parse(text, classes).unwrap_err())
    }

    #[test]
    fn parses_entries_skipping_blanks_and_comments() {
        let list = parse(
            "# header\n\na/1.jpg 3\r\n  b/with space.png\t0  \n# c 1\nc.JPEG 1",
            None,
        )
        .unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list.labels(), &[3, 0, 1]);
        assert_eq!(list.num_classes(), 4);
        assert_eq!(list.path(1), PathBuf::from("/root/b/with space.png"));
        assert_eq!(list.line(2), 6);
        assert!(list.describe(0).contains("train.txt:3"));
        assert!(list.describe(0).contains("a/1.jpg"));
    }

    #[test]
    fn given_class_count_is_kept() {
        assert_eq!(parse("a 0\n", Some(1000)).unwrap().num_classes(), 1000);
    }

    #[test]
    fn errors_name_file_and_line() {
        assert!(err("a 0\nb\n", None).contains("train.txt:2: missing label"));
        let e = err("a 0\n\nb x1\n", None);
        assert!(e.contains("train.txt:3") && e.contains("`x1`"), "{e}");
        assert!(err("a -1\n", None).contains("train.txt:1"));
        let e = err("a 0\nb 10\n", Some(10));
        assert!(
            e.contains("train.txt:2") && e.contains("out of range"),
            "{e}"
        );
        assert!(err("# only\n\n", None).contains("no entries"));
        let e = format!(
            "{:#}",
            ListFile::parse(b"a 0\n\xff 1\n", Path::new("l.txt"), Path::new("."), None)
                .unwrap_err()
        );
        assert!(e.contains("l.txt:2") && e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn missing_list_file_is_named() {
        let e = format!(
            "{:#}",
            ListFile::open(Path::new("/nonexistent/list.txt"), Path::new("."), None).unwrap_err()
        );
        assert!(e.contains("/nonexistent/list.txt"), "{e}");
    }
}
