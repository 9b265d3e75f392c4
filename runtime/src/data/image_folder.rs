//! The image-folder data set: one subdirectory per class, as torchvision's `ImageFolder`
//! reads it, for data that comes as directories rather than a list file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::decode::decode_image_file;
use super::path_table::{shown, shown_path, PathTable};
use super::Image;
use super::{Dataset, MAX_CLASSES};

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
/// indexing; images are decoded on [`Dataset::load`]. A class directory with no image is a
/// class with no sample (the training set reports those).
#[derive(Clone, Debug)]
pub struct ImageFolder {
    table: PathTable,
    class_names: Vec<String>,
}

impl ImageFolder {
    /// Indexes the image folder at `root`. A root with no class directory, more than
    /// [`MAX_CLASSES`] of them, or no image in any, is an error naming it.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        let class_names = Self::class_names_of(root)?;
        let labels: Vec<u32> = (0..class_names.len() as u32).collect();
        Self::index(root, &class_names, &labels, class_names.clone())
    }

    /// Indexes the image folder at `root` with the classes of another (the training folder):
    /// each class directory of `root` gets the label of the class of the same name in
    /// `classes`, so a test folder lacking a class, or whose names sort differently, is still
    /// labelled as the model was trained. A directory whose name is not in `classes` is an
    /// error naming it and the classes.
    pub fn open_with_classes(root: &Path, classes: &[String]) -> anyhow::Result<Self> {
        if classes.len() > MAX_CLASSES {
            bail!(
                "{} training classes, more than the {MAX_CLASSES} supported",
                classes.len()
            );
        }
        let by_name: HashMap<&str, u32> = classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i as u32))
            .collect();
        let here = Self::class_names_of(root)?;
        let mut labels = Vec::with_capacity(here.len());
        for name in &here {
            let Some(&label) = by_name.get(name.as_str()) else {
                bail!(
                    "class directory {} is not a training class; the {} training classes are \
                     {}",
                    shown_path(&root.join(name)),
                    classes.len(),
                    first_names(classes)
                );
            };
            labels.push(label);
        }
        Self::index(root, &here, &labels, classes.to_vec())
    }

    /// The class directory names of the image folder at `root`, sorted, as [`ImageFolder::open`]
    /// numbers them: directories only, hidden ones skipped. An error when there is none or
    /// more than [`MAX_CLASSES`].
    pub fn class_names_of(root: &Path) -> anyhow::Result<Vec<String>> {
        let mut class_names = Vec::new();
        for entry in sorted_entries(root)? {
            if root.join(&entry).is_dir() {
                class_names.push(entry);
            }
        }
        if class_names.is_empty() {
            bail!(
                "image folder {} has no class subdirectory (expected root/<class>/<image>)",
                root.display()
            );
        }
        if class_names.len() > MAX_CLASSES {
            bail!(
                "image folder {} has {} class subdirectories, more than the {MAX_CLASSES} \
                 classes supported",
                root.display(),
                class_names.len()
            );
        }
        Ok(class_names)
    }

    /// Indexes the images of each directory `dirs[k]` of `root` with label `labels[k]`;
    /// `class_names` are the names of the labels.
    fn index(
        root: &Path,
        dirs: &[String],
        labels: &[u32],
        class_names: Vec<String>,
    ) -> anyhow::Result<Self> {
        let mut table = PathTable::new(root);
        let mut images = Vec::new();
        for (class, &label) in dirs.iter().zip(labels) {
            images.clear();
            collect_images(root, class, 0, &mut images)?;
            images.sort();
            for image in &images {
                table.push(image, label, ());
            }
        }
        if table.len() == 0 {
            bail!(
                "image folder {} has no png/jpg/jpeg image in its {} class directories",
                root.display(),
                dirs.len()
            );
        }
        Ok(ImageFolder { table, class_names })
    }

    /// The class names; class `c` is `class_names()[c]`.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The path of sample `i`.
    pub fn path(&self, i: usize) -> PathBuf {
        self.table.path(i)
    }
}

/// The first few of `names` for an error, with how many more there are.
fn first_names(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut text: Vec<String> = names
        .iter()
        .take(SHOWN)
        .map(|n| shown(n).into_owned())
        .collect();
    if names.len() > SHOWN {
        text.push(format!("and {} more", names.len() - SHOWN));
    }
    text.join(", ")
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
            bail!(
                "{}: file name is not valid UTF-8",
                shown_path(&entry.path())
            );
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
        shown_path(&self.table.path(i))
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
