//! The ImageNet-LT annotation JSON as the official code ships it:
//! `{"num_classes": N, "annotations": [{"fpath": "...", "category_id": k}, ...]}`.

use crate::io::bounded_read::{read_file, FileKind};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use super::decode::decode_image_file;
use super::list_file::BOM;
use super::path_table::{shown, shown_path, PathTable};
use super::Image;
use super::{label_range, Dataset, MAX_CLASSES};

#[derive(Deserialize)]
struct AnnotationFile {
    num_classes: usize,
    annotations: Vec<Annotation>,
}

#[derive(Deserialize)]
struct Annotation {
    fpath: String,
    category_id: u32,
}

/// Images listed in an ImageNet-LT JSON annotation file, `fpath`s resolved against a root.
/// Other keys in the file (image sizes, class names) are ignored, and so is a UTF-8
/// byte-order mark at the start.
#[derive(Clone, Debug)]
pub struct ImageNetLtJson {
    json: PathBuf,
    /// Each sample's origin is the index of its annotation in the file.
    table: PathTable<u32>,
    num_classes: usize,
}

impl ImageNetLtJson {
    /// Reads the annotation file at `json`, resolving `fpath`s against `root`. Errors name the
    /// file and, for a bad annotation, its index.
    pub fn open(json: &Path, root: &Path) -> anyhow::Result<Self> {
        let bytes = read_file(json, FileKind::Index)?;
        Self::parse(&bytes, json, root)
    }

    /// [`ImageNetLtJson::open`], then [`ImageNetLtJson::check_files`]: an index whose images
    /// all exist, or with `skip_bad`, without the missing ones (reported on stderr).
    pub fn open_checked(json: &Path, root: &Path, skip_bad: bool) -> anyhow::Result<Self> {
        Self::open(json, root)?.check_files(skip_bad)
    }

    /// Parses annotation JSON already in memory; `json` only names the source in errors.
    pub fn parse(bytes: &[u8], json: &Path, root: &Path) -> anyhow::Result<Self> {
        let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
        // serde_json's errors carry the line and column.
        let file: AnnotationFile = serde_json::from_slice(bytes).with_context(|| {
            format!(
                "parsing ImageNet-LT JSON {} (expected {{\"num_classes\": N, \"annotations\": \
                 [{{\"fpath\": ..., \"category_id\": k}}, ...]}})",
                json.display()
            )
        })?;
        if file.num_classes > MAX_CLASSES {
            bail!(
                "ImageNet-LT JSON {}: num_classes is {}, more than the {MAX_CLASSES} classes \
                 supported",
                json.display(),
                file.num_classes
            );
        }
        if file.annotations.is_empty() {
            bail!("ImageNet-LT JSON {} has no annotations", json.display());
        }
        let count = u32::try_from(file.annotations.len()).with_context(|| {
            format!(
                "ImageNet-LT JSON {} has more annotations than fit a u32",
                json.display()
            )
        })?;
        let mut table = PathTable::new(root);
        let text_bytes = file.annotations.iter().map(|a| a.fpath.len()).sum();
        table.reserve(file.annotations.len(), text_bytes);
        for (i, a) in (0..count).zip(&file.annotations) {
            // num_classes is at most MAX_CLASSES, so this bounds every category_id by it too.
            if a.category_id as usize >= file.num_classes {
                bail!(
                    "ImageNet-LT JSON {}: annotation {i} ({}) has category_id {}, out of \
                     range: num_classes is {} ({})",
                    json.display(),
                    shown(&a.fpath),
                    a.category_id,
                    file.num_classes,
                    label_range(file.num_classes)
                );
            }
            table.push(&a.fpath, a.category_id, i);
        }
        Ok(ImageNetLtJson {
            json: json.to_path_buf(),
            table,
            num_classes: file.num_classes,
        })
    }

    /// The path of sample `i`, resolved against the root.
    pub fn path(&self, i: usize) -> PathBuf {
        self.table.path(i)
    }

    /// The samples, ascending, whose image is not a regular file (missing, a directory, a
    /// dangling link). Checked in parallel, one `metadata` call each; no image is opened.
    pub fn missing_files(&self) -> Vec<usize> {
        self.table.missing()
    }

    /// Checks that every annotated image exists, so a missing one is reported before training
    /// rather than mid-epoch. Without `skip_bad` any missing image is an error naming how
    /// many and the first few with their annotation indices; with it they are dropped with a
    /// one-line report on stderr, and it is an error only when none is left.
    pub fn check_files(mut self, skip_bad: bool) -> anyhow::Result<Self> {
        let json = &self.json;
        self.table = self
            .table
            .check_files(skip_bad, |table, i| describe(json, table, i))?;
        Ok(self)
    }
}

/// Sample `i` of `table` with its annotation in `json`.
fn describe(json: &Path, table: &PathTable<u32>, i: usize) -> String {
    format!(
        "{} (annotation {} of {})",
        shown_path(&table.path(i)),
        table.origin(i),
        json.display()
    )
}

impl Dataset for ImageNetLtJson {
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
        describe(&self.json, &self.table, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<ImageNetLtJson> {
        ImageNetLtJson::parse(
            text.as_bytes(),
            Path::new("ImageNet_LT_train.json"),
            Path::new("/imagenet"),
        )
    }

    #[test]
    fn reads_official_layout() {
        let d = parse(
            r#"{"images": [], "num_classes": 1000, "annotations": [
                {"fpath": "train/n01440764/a.JPEG", "category_id": 0, "image_id": 7},
                {"fpath": "train/n15075141/b.JPEG", "category_id": 999}]}"#,
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.num_classes(), 1000);
        assert_eq!(d.labels(), &[0, 999]);
        assert_eq!(d.path(1), PathBuf::from("/imagenet/train/n15075141/b.JPEG"));
        assert!(d
            .describe(1)
            .contains("annotation 1 of ImageNet_LT_train.json"));
    }

    #[test]
    fn errors_name_the_file() {
        let e = format!(
            "{:#}",
            parse(r#"{"num_classes": 2, "annotations": ["#).unwrap_err()
        );
        assert!(
            e.contains("ImageNet_LT_train.json") && e.contains("line 1"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            parse(r#"{"num_classes": 2, "annotations": [{"fpath": "a", "category_id": 2}]}"#)
                .unwrap_err()
        );
        assert!(
            e.contains("annotation 0") && e.contains("category_id 2"),
            "{e}"
        );
        let e = format!("{:#}", parse(r#"{"annotations": []}"#).unwrap_err());
        assert!(e.contains("num_classes"), "{e}");
    }

    #[test]
    fn class_count_is_bounded_and_ranges_written_out() {
        let e = format!(
            "{:#}",
            parse(
                r#"{"num_classes": 10, "annotations": [{"fpath": "a\u200b", "category_id": 10}]}"#
            )
            .unwrap_err()
        );
        assert_eq!(
            e,
            "ImageNet-LT JSON ImageNet_LT_train.json: annotation 0 (a\\u{200b}) has \
             category_id 10, out of range: num_classes is 10 (labels 0 to 9)"
        );
        for n in ["1000001", "4000000000"] {
            let e = format!(
                "{:#}",
                parse(&format!(
                    r#"{{"num_classes": {n}, "annotations": [{{"fpath": "a", "category_id": 0}}]}}"#
                ))
                .unwrap_err()
            );
            assert_eq!(
                e,
                format!(
                    "ImageNet-LT JSON ImageNet_LT_train.json: num_classes is {n}, more than \
                     the 1000000 classes supported"
                )
            );
        }
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_dropped_entries_keep_their_index() {
        let d = parse(
            "\u{feff}{\"num_classes\": 3, \"annotations\": [{\"fpath\": \"a\", \"category_id\": 0}, \
             {\"fpath\": \"b\", \"category_id\": 2}, {\"fpath\": \"c\", \"category_id\": 1}]}",
        )
        .unwrap();
        let d = ImageNetLtJson {
            table: d.table.without(&[1]),
            ..d
        };
        assert_eq!(d.labels(), &[0, 1]);
        assert_eq!(
            d.describe(1),
            "/imagenet/c (annotation 2 of ImageNet_LT_train.json)"
        );
    }
}
