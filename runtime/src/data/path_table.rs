//! Compact storage of the relative paths and labels of file-backed data sets.
//!
//! A list of a million images must index in about a second and stay small, so the paths are
//! not stored as a million `PathBuf`s: they are concatenated into one string with an end
//! offset per entry, and nothing is opened until a sample is loaded.

use std::path::{Path, PathBuf};

/// Relative paths (resolved against `root` on demand) and their labels.
#[derive(Clone, Debug, Default)]
pub(crate) struct PathTable {
    root: PathBuf,
    text: String,
    ends: Vec<usize>,
    labels: Vec<u32>,
}

impl PathTable {
    pub(crate) fn new(root: &Path) -> Self {
        PathTable {
            root: root.to_path_buf(),
            ..Default::default()
        }
    }

    pub(crate) fn reserve(&mut self, entries: usize, text_bytes: usize) {
        self.ends.reserve(entries);
        self.labels.reserve(entries);
        self.text.reserve(text_bytes);
    }

    pub(crate) fn push(&mut self, relative: &str, label: u32) {
        self.text.push_str(relative);
        self.ends.push(self.text.len());
        self.labels.push(label);
    }

    pub(crate) fn len(&self) -> usize {
        self.labels.len()
    }

    pub(crate) fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The path of entry `i` as written in the index (relative to the root).
    pub(crate) fn relative(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    /// The path of entry `i` resolved against the root (an absolute path stays as it is).
    pub(crate) fn path(&self, i: usize) -> PathBuf {
        self.root.join(self.relative(i))
    }

    pub(crate) fn max_label(&self) -> Option<u32> {
        self.labels.iter().copied().max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_resolves_entries() {
        let mut t = PathTable::new(Path::new("/data"));
        t.push("a/b.png", 3);
        t.push("c.jpg", 0);
        assert_eq!(t.len(), 2);
        assert_eq!(t.relative(0), "a/b.png");
        assert_eq!(t.relative(1), "c.jpg");
        assert_eq!(t.path(1), PathBuf::from("/data/c.jpg"));
        assert_eq!(t.labels(), &[3, 0]);
        assert_eq!(t.max_label(), Some(3));
    }
}
