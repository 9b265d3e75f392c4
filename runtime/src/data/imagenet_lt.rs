//! The ImageNet-LT annotation JSON as the official code ships it:
//! `{"num_classes": N, "annotations": [{"fpath": "...", "category_id": k}, ...]}`.

use crate::bounded_read::{read_file, FileKind};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use super::decode::decode_image_file;
use super::path_table::PathTable;
use super::Dataset;
use crate::image::Image;

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
/// Other keys in the file (image sizes, class names) are ignored.
#[derive(Clone, Debug)]
pub struct ImageNetLtJson {
    json: PathBuf,
    table: PathTable,
    num_classes: usize,
}

impl ImageNetLtJson {
    /// Reads the annotation file at `json`, resolving `fpath`s against `root`. Errors name the
    /// file and, for a bad annotation, its index.
    pub fn open(json: &Path, root: &Path) -> anyhow::Result<Self> {
        let bytes = read_file(json, FileKind::Index)?;
        Self::parse(&bytes, json, root)
    }

    /// Parses annotation JSON already in memory; `json` only names the source in errors.
    pub fn parse(bytes: &[u8], json: &Path, root: &Path) -> anyhow::Result<Self> {
        // serde_json's errors carry the line and column.
        let file: AnnotationFile = serde_json::from_slice(bytes).with_context(|| {
            format!(
                "parsing ImageNet-LT JSON {} (expected {{\"num_classes\": N, \"annotations\": \
                 [{{\"fpath\": ..., \"category_id\": k}}, ...]}})",
                json.display()
            )
        })?;
        if file.annotations.is_empty() {
            bail!("ImageNet-LT JSON {} has no annotations", json.display());
        }
        let mut table = PathTable::new(root);
        let text_bytes = file.annotations.iter().map(|a| a.fpath.len()).sum();
        table.reserve(file.annotations.len(), text_bytes);
        for (i, a) in file.annotations.iter().enumerate() {
            if a.category_id as usize >= file.num_classes {
                bail!(
                    "ImageNet-LT JSON {}: annotation {i} ({}) has category_id {} but \
                     num_classes is {}",
                    json.display(),
                    a.fpath,
                    a.category_id,
                    file.num_classes
                );
            }
            table.push(&a.fpath, a.category_id);
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
        format!(
            "{} (annotation {i} of {})",
            self.table.path(i).display(),
            self.json.display()
        )
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
}
