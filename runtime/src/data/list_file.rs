//! The list-file data set: one `relative/path label` per line (the ImageNet-LT and Places-LT
//! `*_train.txt` / `*_test.txt` files), resolved against a root directory.

use crate::io::bounded_read::{read_file, FileKind};
use std::path::{Path, PathBuf};

use anyhow::bail;

use super::decode::decode_image_file;
use super::path_table::{shown, shown_path, PathTable};
use super::Image;
use super::{label_range, Dataset, MAX_CLASSES};

/// The UTF-8 byte-order mark some Windows editors write at the start of a text file.
pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Images listed in a text file, one `relative/path label` per line.
///
/// Blank lines and lines starting with `#` are skipped, and so is a UTF-8 byte-order mark at
/// the start. The label is the last whitespace-separated field, so paths may contain spaces.
/// Indexing reads only the list: no image is opened until [`Dataset::load`], so a list of a
/// million images indexes in about a second and holds only the paths and labels;
/// [`ListFile::missing_files`] and [`ListFile::check_files`] check that the images exist.
#[derive(Clone, Debug)]
pub struct ListFile {
    list: PathBuf,
    /// Each entry's origin is its 1-based line in the list.
    table: PathTable<u32>,
    num_classes: usize,
}

impl ListFile {
    /// Reads the list at `list`, resolving its paths against `root`. With `num_classes`
    /// given, every label must be below it; otherwise the number of classes is the largest
    /// label + 1. Labels must be below [`MAX_CLASSES`]. Errors name the list file and line.
    pub fn open(list: &Path, root: &Path, num_classes: Option<usize>) -> anyhow::Result<Self> {
        let bytes = read_file(list, FileKind::Index)?;
        Self::parse(&bytes, list, root, num_classes)
    }

    /// [`ListFile::open`], then [`ListFile::check_files`]: an index whose images all exist,
    /// or with `skip_bad`, without the missing ones (reported on stderr).
    pub fn open_checked(
        list: &Path,
        root: &Path,
        num_classes: Option<usize>,
        skip_bad: bool,
    ) -> anyhow::Result<Self> {
        Self::open(list, root, num_classes)?.check_files(skip_bad)
    }

    /// Parses list text already in memory; `list` is only used to name the source in errors
    /// and descriptions.
    pub fn parse(
        bytes: &[u8],
        list: &Path,
        root: &Path,
        num_classes: Option<usize>,
    ) -> anyhow::Result<Self> {
        if let Some(classes) = num_classes {
            if classes > MAX_CLASSES {
                bail!(
                    "{}: {classes} classes asked for, more than the {MAX_CLASSES} supported",
                    list.display()
                );
            }
        }
        let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
        let mut table = PathTable::new(root);
        // A typical line is ~40 bytes; reserving from that avoids most regrowth.
        table.reserve(bytes.len() / 40 + 1, bytes.len());
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
                    "{}: missing label: expected `relative/path label`, found `{}`",
                    at(),
                    shown(text)
                );
            };
            let label = parse_label(label).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
            if let Some(classes) = num_classes {
                if label as usize >= classes {
                    bail!(
                        "{}: label {label} is out of range: there are {classes} classes ({})",
                        at(),
                        label_range(classes)
                    );
                }
            }
            let line_no =
                u32::try_from(line_no).map_err(|_| anyhow::anyhow!("{}: too many lines", at()))?;
            table.push(path.trim_end(), label, line_no);
        }
        if table.len() == 0 {
            bail!("list file {} has no entries", list.display());
        }
        let num_classes =
            num_classes.unwrap_or_else(|| table.max_label().map_or(0, |m| m as usize + 1));
        Ok(ListFile {
            list: list.to_path_buf(),
            table,
            num_classes,
        })
    }

    /// The path of sample `i`, resolved against the root.
    pub fn path(&self, i: usize) -> PathBuf {
        self.table.path(i)
    }

    /// The 1-based line of sample `i` in the list file.
    pub fn line(&self, i: usize) -> usize {
        self.table.origin(i) as usize
    }

    /// The samples, ascending, whose image is not a regular file (missing, a directory, a
    /// dangling link). Checked in parallel, one `metadata` call each; no image is opened.
    pub fn missing_files(&self) -> Vec<usize> {
        self.table.missing()
    }

    /// Checks that every listed image exists, so a missing one is reported before training
    /// rather than mid-epoch. Without `skip_bad` any missing image is an error naming how
    /// many and the first few with their list lines; with it they are dropped with a one-line
    /// report on stderr, and it is an error only when none is left.
    pub fn check_files(mut self, skip_bad: bool) -> anyhow::Result<Self> {
        let list = &self.list;
        self.table = self
            .table
            .check_files(skip_bad, |table, i| describe(list, table, i))?;
        Ok(self)
    }
}

/// Entry `i` of `table` with its line in `list`.
fn describe(list: &Path, table: &PathTable<u32>, i: usize) -> String {
    format!(
        "{} (listed at {}:{})",
        shown_path(&table.path(i)),
        list.display(),
        table.origin(i)
    )
}

/// A label field: a non-negative integer below [`MAX_CLASSES`].
fn parse_label(field: &str) -> anyhow::Result<u32> {
    let digits = !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit());
    match field.parse::<u64>() {
        Ok(label) if label < MAX_CLASSES as u64 => Ok(label as u32),
        // Too many digits for u64 is as much too large as 4000000000.
        _ if digits => bail!(
            "label {} is above {}, the largest supported (at most {MAX_CLASSES} classes)",
            shown(field),
            MAX_CLASSES - 1
        ),
        _ => bail!("the label `{}` is not a non-negative integer", shown(field)),
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
        describe(&self.list, &self.table, i)
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
    fn labels_are_bounded_and_ranges_written_out() {
        assert_eq!(
            err("a 0\nb 10\n", Some(10)),
            "train.txt:2: label 10 is out of range: there are 10 classes (labels 0 to 9)"
        );
        let too_large = "label 1000000 is above 999999, the largest supported (at most \
                         1000000 classes)";
        assert_eq!(
            err("a 1000000\n", None),
            format!("train.txt:1: {too_large}")
        );
        assert_eq!(
            parse("a 999999\n", None).unwrap().num_classes(),
            MAX_CLASSES
        );
        for label in ["4000000000", "99999999999999999999999"] {
            let e = err(&format!("a 0\nb {label}\n"), None);
            assert!(
                e.starts_with("train.txt:2: label ") && e.contains("999999"),
                "{e}"
            );
        }
        assert!(err("a 0\n", Some(MAX_CLASSES + 1)).contains("more than the 1000000"));
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let list = parse("\u{feff}a/1.jpg 3\nb 0\n", None).unwrap();
        assert_eq!(list.path(0), PathBuf::from("/root/a/1.jpg"));
        assert_eq!(list.line(0), 1);
        // Only at the start: elsewhere it is part of the path, shown escaped.
        let list = parse("a 0\n\u{feff}b 0\n", None).unwrap();
        assert!(
            list.describe(1).contains("\\u{feff}b"),
            "{}",
            list.describe(1)
        );
    }

    #[test]
    fn invisible_characters_in_errors_are_escaped() {
        assert_eq!(
            err("a 3\u{200b}\n", None),
            "train.txt:1: the label `3\\u{200b}` is not a non-negative integer"
        );
        assert_eq!(
            err("a\u{1f}3\n", None),
            "train.txt:1: missing label: expected `relative/path label`, found `a\\u{1f}3`"
        );
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
