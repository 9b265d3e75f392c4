//! The image-folder data set: one subdirectory per class, as torchvision's `ImageFolder`
//! reads it, for data that comes as directories rather than a list file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::decode::decode_image_file;
use super::path_table::PathTable;
use super::Dataset;
use crate::image::Image;

/// Subdirectories deeper than this inside a class folder are not followed (guards against
/// symlink cycles).
const MAX_DEPTH: usize = 32;

/// Images in `root/<class>/**/<name>.{png,jpg,jpeg}`.
///
/// Classes are the subdirectories of `root` sorted by name (class index = position), images
/// are the files with a png/jpg/jpeg extension (any case) anywhere below a class directory,
/// sorted by their path inside it, so the indexing is the same on every machine. Entries
/// whose names start with `.` are skipped: they are editor, notebook and OS droppings
/// (`.ipynb_checkpoints`, `.DS_Store`), never classes. Only directories are read while
/// indexing; images are decoded on [`Dataset::load`].
#[derive(Clone, Debug)]
pub struct ImageFolder {
    table: PathTable,
    class_names: Vec<String>,
}

impl ImageFolder {
    /// Indexes the image folder at `root`. A root with no class directory, or a class
    /// directory with no image, is an error naming it.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        let mut class_names = Vec::new();
        for entry in sorted_entries(root)? {
            let path = root.join(&entry);
            if path.is_dir() {
                class_names.push(entry);
            }
        }
        if class_names.is_empty() {
            bail!(
                "image folder {} has no class subdirectory (expected root/<class>/<image>)",
                root.display()
            );
        }
        u32::try_from(class_names.len())
            .with_context(|| format!("image folder {} has too many classes", root.display()))?;
        let mut table = PathTable::new(root);
        let mut images = Vec::new();
        for (label, class) in class_names.iter().enumerate() {
            images.clear();
            collect_images(root, class, 0, &mut images)?;
            if images.is_empty() {
                bail!(
                    "class directory {} has no png/jpg/jpeg image",
                    root.join(class).display()
                );
            }
            images.sort();
            for image in &images {
                table.push(image, label as u32);
            }
        }
        Ok(ImageFolder { table, class_names })
    }

    /// The class directory names; class `c` is `class_names()[c]`.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The path of sample `i`.
    pub fn path(&self, i: usize) -> PathBuf {
        self.table.path(i)
    }
}

/// The non-hidden entry names of `dir`, sorted. Names that are not UTF-8 are an error: they
/// could not be stored or reported faithfully.
fn sorted_entries(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let read = std::fs::read_dir(dir)
        .with_context(|| format!("reading image folder directory {}", dir.display()))?;
    for entry in read {
        let entry =
            entry.with_context(|| format!("reading image folder directory {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            bail!("{}: file name is not valid UTF-8", entry.path().display());
        };
        if !name.starts_with('.') {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn is_image_name(name: &str) -> bool {
    let Some((_, ext)) = name.rsplit_once('.') else {
        return false;
    };
    ["png", "jpg", "jpeg"]
        .iter()
        .any(|e| ext.eq_ignore_ascii_case(e))
}

/// Appends the image paths (relative to `root`) below `root/relative_dir`.
fn collect_images(
    root: &Path,
    relative_dir: &str,
    depth: usize,
    out: &mut Vec<String>,
) -> anyhow::Result<()> {
    let dir = root.join(relative_dir);
    for name in sorted_entries(&dir)? {
        let relative = format!("{relative_dir}/{name}");
        let path = dir.join(&name);
        if path.is_dir() {
            if depth < MAX_DEPTH {
                collect_images(root, &relative, depth + 1, out)?;
            }
        } else if is_image_name(&name) {
            out.push(relative);
        }
    }
    Ok(())
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.table.len()
    }

    fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    fn labels(&self) -> &[u32] {
        self.table.labels()
    }

    fn load(&self, i: usize) -> anyhow::Result<Image> {
        decode_image_file(&self.table.path(i))
    }

    fn describe(&self, i: usize) -> String {
        self.table.path(i).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_case_insensitive() {
        assert!(is_image_name("a.PNG"));
        assert!(is_image_name("a.b.Jpeg"));
        assert!(is_image_name("x.jpg"));
        assert!(!is_image_name("png"));
        assert!(!is_image_name("a.gif"));
        assert!(!is_image_name("a.png.txt"));
    }
}
