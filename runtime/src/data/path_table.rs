//! Compact storage of the relative paths and labels of file-backed data sets, and the check
//! that every listed file is there.
//!
//! A list of a million images must index in about a second and stay small, so the paths are
//! not stored as a million `PathBuf`s: they are concatenated into one string with an end
//! offset per entry, and no image is opened until a sample is loaded.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::bail;
use rayon::prelude::*;

/// Relative paths (resolved against `root` on demand), their labels, and where each entry
/// stands in its index (`O`: an annotation's index, a list's line; `()` where there is no
/// index file) for messages. Entries dropped by [`PathTable::without`] leave gaps in the
/// origins, so a message still points at the right place in the index.
#[derive(Clone, Debug, Default)]
pub(crate) struct PathTable<O = ()> {
    root: PathBuf,
    text: String,
    ends: Vec<usize>,
    labels: Vec<u32>,
    origins: Vec<O>,
}

impl<O: Copy + Sync> PathTable<O> {
    pub(crate) fn new(root: &Path) -> Self {
        PathTable {
            root: root.to_path_buf(),
            text: String::new(),
            ends: Vec::new(),
            labels: Vec::new(),
            origins: Vec::new(),
        }
    }

    pub(crate) fn reserve(&mut self, entries: usize, text_bytes: usize) {
        self.ends.reserve(entries);
        self.labels.reserve(entries);
        self.origins.reserve(entries);
        self.text.reserve(text_bytes);
    }

    pub(crate) fn push(&mut self, relative: &str, label: u32, origin: O) {
        self.text.push_str(relative);
        self.ends.push(self.text.len());
        self.labels.push(label);
        self.origins.push(origin);
    }

    pub(crate) fn len(&self) -> usize {
        self.labels.len()
    }

    pub(crate) fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Where entry `i` stands in its index, as pushed.
    pub(crate) fn origin(&self, i: usize) -> O {
        self.origins[i]
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

    /// The entries, in order, whose path is not a regular file (or a link to one). One
    /// `metadata` call per entry, spread over rayon's threads: on a network file system a
    /// million sequential calls would take minutes, and the check must stay a small part of
    /// indexing.
    pub(crate) fn missing(&self) -> Vec<usize> {
        (0..self.len())
            .into_par_iter()
            .filter(|&i| !std::fs::metadata(self.path(i)).is_ok_and(|m| m.is_file()))
            .collect()
    }

    /// The table without the entries at `drop` (ascending).
    pub(crate) fn without(&self, drop: &[usize]) -> Self {
        let mut t = PathTable::new(&self.root);
        t.reserve(self.len() - drop.len(), self.text.len());
        for i in kept(self.len(), drop) {
            t.push(self.relative(i), self.labels[i], self.origins[i]);
        }
        t
    }

    /// Checks that every entry's file exists, so a missing one is reported before training
    /// rather than mid-epoch: the table itself when all do; under [`missing_policy`] otherwise
    /// (`describe` names entry `i` of this table with where it is listed).
    pub(crate) fn check_files(
        self,
        skip_bad: bool,
        describe: impl Fn(&Self, usize) -> String,
    ) -> anyhow::Result<Self> {
        let missing = self.missing();
        if missing.is_empty() {
            return Ok(self);
        }
        missing_policy(
            &missing,
            self.len(),
            skip_bad,
            |i| describe(&self, i),
            |i| self.path(i),
        )?;
        Ok(self.without(&missing))
    }
}

/// The indices below `len` that are not in `drop` (ascending), in order.
pub(crate) fn kept(len: usize, drop: &[usize]) -> impl Iterator<Item = usize> + '_ {
    let mut next = drop.iter().copied().peekable();
    (0..len).filter(move |&i| {
        if next.peek() == Some(&i) {
            next.next();
            false
        } else {
            true
        }
    })
}

/// Why the file at `path` cannot be read as an image, for the first few missing ones shown.
fn why_missing(path: &Path) -> String {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "no such file".to_owned(),
        Err(e) => e.to_string(),
        Ok(m) if m.is_dir() => "a directory".to_owned(),
        Ok(m) if m.is_file() => "present now".to_owned(),
        Ok(_) => "not a regular file".to_owned(),
    }
}

/// How many missing entries an error or report names.
const SHOWN_MISSING: usize = 3;

/// Applies the policy for listed files that are missing (`missing` ascending, out of `total`
/// entries): without `skip_bad` any is an error naming how many and the first few; with it
/// they are reported on one line and the caller drops them, unless none would be left.
/// `describe` names entry `i` with where it is listed; `path` resolves it.
pub(crate) fn missing_policy(
    missing: &[usize],
    total: usize,
    skip_bad: bool,
    describe: impl Fn(usize) -> String,
    path: impl Fn(usize) -> PathBuf,
) -> anyhow::Result<()> {
    let Some(&first) = missing.first() else {
        return Ok(());
    };
    let n = missing.len();
    let named = |i: usize| format!("{}: {}", describe(i), why_missing(&path(i)));
    if !skip_bad {
        let mut shown: Vec<String> = missing
            .iter()
            .take(SHOWN_MISSING)
            .map(|&i| named(i))
            .collect();
        if n > SHOWN_MISSING {
            shown.push(format!("and {} more", n - SHOWN_MISSING));
        }
        let (does, it) = if n == 1 {
            ("does not exist or is not a regular file", "it")
        } else {
            ("do not exist or are not regular files", "them")
        };
        bail!(
            "{n} of {total} listed images {does}: {}; --skip-bad leaves {it} out",
            shown.join("; ")
        );
    }
    if n == total {
        let all = if n == 1 {
            "the 1 listed file is missing (".to_owned()
        } else {
            format!("all {n} listed files are missing (first: ")
        };
        bail!("--skip-bad left no image: {all}{})", named(first));
    }
    if n == 1 {
        eprintln!(
            "skipping 1 listed image that does not exist ({})",
            named(first)
        );
    } else {
        eprintln!(
            "skipping {n} listed images that do not exist (first: {})",
            named(first)
        );
    }
    Ok(())
}

/// `text` with control and invisible characters escaped (`\t`, `\u{200b}`), so an error that
/// quotes a path or label shows what is really there; quotes and backslashes, common in
/// paths, stay as they are.
pub(crate) fn shown(text: &str) -> Cow<'_, str> {
    // A character is shown as it is when `str::escape_debug` leaves it alone after a letter:
    // combining accents (decomposed names, as macOS stores them) are printable there, while
    // `char::escape_debug` would escape them everywhere.
    let plain = |c: char| {
        matches!(c, '\\' | '\'' | '"') || (c.is_ascii() && !c.is_ascii_control()) || {
            let after_letter = format!("a{c}");
            after_letter.escape_debug().to_string() == after_letter
        }
    };
    if text.chars().all(plain) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if plain(c) {
            out.push(c);
        } else {
            out.extend(c.escape_debug());
        }
    }
    Cow::Owned(out)
}

/// [`shown`] for a path.
pub(crate) fn shown_path(path: &Path) -> String {
    shown(&path.to_string_lossy()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_resolves_entries() {
        let mut t = PathTable::new(Path::new("/data"));
        t.push("a/b.png", 3, 1);
        t.push("c.jpg", 0, 2);
        assert_eq!(t.len(), 2);
        assert_eq!(t.relative(0), "a/b.png");
        assert_eq!(t.relative(1), "c.jpg");
        assert_eq!(t.path(1), PathBuf::from("/data/c.jpg"));
        assert_eq!(t.labels(), &[3, 0]);
        assert_eq!(t.max_label(), Some(3));
    }

    #[test]
    fn dropping_entries_keeps_the_rest_in_order() {
        let mut t = PathTable::new(Path::new("/data"));
        for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            t.push(name, i as u32, 10 + i as u32);
        }
        let t = t.without(&[0, 2, 4]);
        assert_eq!((t.relative(0), t.relative(1)), ("b", "d"));
        assert_eq!(t.labels(), &[1, 3]);
        assert_eq!((t.origin(0), t.origin(1)), (11, 13));
        assert_eq!(kept(4, &[]).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(kept(4, &[3]).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn missing_entries_are_found_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("here.png"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("sub.png")).unwrap();
        let mut t = PathTable::new(dir.path());
        for name in [
            "gone.png",
            "here.png",
            "sub.png",
            "here.png",
            "also-gone.jpg",
        ] {
            t.push(name, 0, 0);
        }
        assert_eq!(t.missing(), [0, 2, 4]);
        assert_eq!(why_missing(&t.path(0)), "no such file");
        assert_eq!(why_missing(&t.path(2)), "a directory");
    }

    #[test]
    fn invisible_characters_are_escaped() {
        assert_eq!(shown("a/b c.png"), "a/b c.png");
        assert_eq!(shown("O'Brien\\x\"y\""), "O'Brien\\x\"y\"");
        assert_eq!(shown("3\u{200b}"), "3\\u{200b}");
        assert_eq!(shown("a\tb\u{1f}"), "a\\tb\\u{1f}");
        assert_eq!(shown("\u{feff}a"), "\\u{feff}a");
        assert_eq!(shown("é/日本.png"), "é/日本.png");
        assert_eq!(shown("cafe\u{301}.jpg"), "cafe\u{301}.jpg");
    }
}
