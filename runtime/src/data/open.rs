//! Opens the training and test data named by the flags, checked before any work: every listed
//! image exists (or, with `--skip-bad`, the missing ones are left out with a report), the
//! training set has at least two classes with images, and test labels fit the model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};

use super::{
    label_range, shown, CifarBinary, Dataset, Digits, ImageFolder, ImageNetLtJson, ListFile, Split,
    Subset,
};
use crate::config::{DataKind, RunConfig};

fn root_for(cfg: &RunConfig, file: &Path) -> PathBuf {
    cfg.data.root.clone().unwrap_or_else(|| {
        file.parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    })
}

/// How many classes without images the training report names.
const SHOWN_EMPTY_CLASSES: usize = 10;

/// The training set (long-tailed where the flags ask for it). Listed images are checked to
/// exist (`--skip-bad` drops the missing ones with a report); a set with fewer than two
/// classes that have images is refused, and classes with none are reported on stderr.
pub fn open_train(cfg: &RunConfig) -> Result<Arc<dyn Dataset>> {
    let d = &cfg.data;
    let mut class_names: Option<Vec<String>> = None;
    let set: Arc<dyn Dataset> = match cfg.data_kind {
        DataKind::List => {
            let list = d
                .train_list
                .as_ref()
                .ok_or_else(|| anyhow!("no --train-list"))?;
            Arc::new(ListFile::open_checked(
                list,
                &root_for(cfg, list),
                None,
                d.skip_bad,
            )?)
        }
        DataKind::ImageNetLt => {
            let json = d
                .imagenet_lt_json
                .as_ref()
                .ok_or_else(|| anyhow!("no --imagenet-lt-json"))?;
            Arc::new(ImageNetLtJson::open_checked(
                json,
                &root_for(cfg, json),
                d.skip_bad,
            )?)
        }
        DataKind::ImageFolder => {
            let dir = d
                .image_folder
                .as_ref()
                .ok_or_else(|| anyhow!("no --image-folder"))?;
            let folder = ImageFolder::open(dir)?;
            class_names = Some(folder.class_names().to_vec());
            Arc::new(folder)
        }
        DataKind::Cifar => {
            let dir = d.cifar.as_ref().ok_or_else(|| anyhow!("no --cifar"))?;
            let full: Arc<dyn Dataset> = Arc::new(CifarBinary::open(dir, Split::Train)?);
            Arc::new(Subset::long_tailed(full, cfg.imbalance)?)
        }
        DataKind::Digits => {
            let full: Arc<dyn Dataset> = Arc::new(Digits::new(Split::Train));
            Arc::new(Subset::long_tailed(full, cfg.imbalance)?)
        }
    };
    if set.is_empty() {
        bail!("the training set is empty");
    }
    if let Some(report) = check_train_classes(set.as_ref(), class_names.as_deref())? {
        eprintln!("{report}");
    }
    Ok(set)
}

/// Refuses a training set with fewer than two classes that have images; otherwise the
/// one-line report of the classes with none, if any. `names` are the class names where the
/// data has them.
pub fn check_train_classes(set: &dyn Dataset, names: Option<&[String]>) -> Result<Option<String>> {
    let counts = class_counts(set);
    let name = |c: usize| match names.and_then(|n| n.get(c)) {
        Some(n) => format!("{c} `{}`", shown(n)),
        None => c.to_string(),
    };
    let used: Vec<usize> = (0..counts.len()).filter(|&c| counts[c] > 0).collect();
    if let [only] = used[..] {
        bail!(
            "the training set has one class (class {}, {}): contrastive and classification \
             training need at least two",
            name(only),
            images(counts[only])
        );
    }
    if used.is_empty() {
        bail!("the training set has no class with an image");
    }
    let empty: Vec<usize> = (0..counts.len()).filter(|&c| counts[c] == 0).collect();
    if empty.is_empty() {
        return Ok(None);
    }
    let mut shown: Vec<String> = empty
        .iter()
        .take(SHOWN_EMPTY_CLASSES)
        .map(|&c| name(c))
        .collect();
    if empty.len() > SHOWN_EMPTY_CLASSES {
        shown.push(format!("and {} more", empty.len() - SHOWN_EMPTY_CLASSES));
    }
    let (have, classes) = if empty.len() == 1 {
        ("has", "class")
    } else {
        ("have", "classes")
    };
    Ok(Some(format!(
        "{} of {} classes {have} no training image ({classes} {}); training goes on with the \
         other {}",
        empty.len(),
        counts.len(),
        shown.join(", "),
        used.len()
    )))
}

fn images(n: usize) -> String {
    if n == 1 {
        "1 image".to_owned()
    } else {
        format!("{n} images")
    }
}

/// The test set: `--test-list`, `--imagenet-lt-test-json` or `--test-image-folder` when
/// given, else the test split of CIFAR or the digits. A test image folder is labelled by the
/// class names of the training image folder, listed again from `--image-folder`.
pub fn open_test(cfg: &RunConfig, num_classes: usize) -> Result<Arc<dyn Dataset>> {
    open_test_with_classes(cfg, num_classes, None)
}

/// [`open_test`] with the training class names given (for a test image folder; `None` lists
/// them again from the training `--image-folder`), for callers that have them recorded.
pub fn open_test_with_classes(
    cfg: &RunConfig,
    num_classes: usize,
    train_classes: Option<&[String]>,
) -> Result<Arc<dyn Dataset>> {
    let d = &cfg.data;
    let set: Arc<dyn Dataset> = if let Some(list) = &d.test_list {
        Arc::new(ListFile::open_checked(
            list,
            &root_for(cfg, list),
            None,
            d.skip_bad,
        )?)
    } else if let Some(json) = &d.imagenet_lt_test_json {
        Arc::new(ImageNetLtJson::open_checked(
            json,
            &root_for(cfg, json),
            d.skip_bad,
        )?)
    } else if let Some(dir) = &d.test_image_folder {
        Arc::new(open_test_folder(cfg, dir, num_classes, train_classes)?)
    } else {
        match cfg.data_kind {
            DataKind::Cifar => {
                let dir = d.cifar.as_ref().ok_or_else(|| anyhow!("no --cifar"))?;
                Arc::new(CifarBinary::open(dir, Split::Test)?)
            }
            DataKind::Digits => Arc::new(Digits::new(Split::Test)),
            _ => bail!(
                "no test data: give --test-list FILE (with --root DIR), \
                 --imagenet-lt-test-json FILE or --test-image-folder DIR"
            ),
        }
    };
    if set.is_empty() {
        bail!("the test set is empty");
    }
    check_test_labels(set.as_ref(), num_classes)?;
    if set.num_classes() > num_classes {
        bail!(
            "the test set has {} classes but the model was trained on {num_classes}",
            set.num_classes()
        );
    }
    Ok(set)
}

/// A test image folder labelled by the training classes' names where they are known: from
/// `train_classes`, else from the training `--image-folder`; otherwise (a model trained on a
/// list or JSON) by the folder's own sorted order, as before names could be matched.
fn open_test_folder(
    cfg: &RunConfig,
    dir: &Path,
    num_classes: usize,
    train_classes: Option<&[String]>,
) -> Result<ImageFolder> {
    let listed;
    let classes = match (train_classes, &cfg.data.image_folder) {
        (Some(c), _) => {
            if c.len() != num_classes {
                bail!(
                    "{} training class names for a model of {num_classes} classes",
                    c.len()
                );
            }
            c
        }
        (None, Some(train_dir)) => {
            listed = ImageFolder::class_names_of(train_dir).map_err(|e| {
                anyhow!(
                    "{e:#}; the test image folder's classes are matched by name to the \
                     training folder's, so it must be readable"
                )
            })?;
            if listed.len() != num_classes {
                bail!(
                    "the training image folder {} now has {} classes but the model has \
                     {num_classes}: its class directories changed since training",
                    train_dir.display(),
                    listed.len()
                );
            }
            &listed[..]
        }
        (None, None) => return ImageFolder::open(dir),
    };
    ImageFolder::open_with_classes(dir, classes)
}

/// Every test label must name one of the model's `num_classes` classes.
fn check_test_labels(set: &dyn Dataset, num_classes: usize) -> Result<()> {
    if let Some(i) = set.labels().iter().position(|&l| l as usize >= num_classes) {
        bail!(
            "{}: label {} is out of range: the model has {num_classes} classes ({})",
            set.describe(i),
            set.label(i),
            label_range(num_classes)
        );
    }
    Ok(())
}

/// Training images per class.
pub fn class_counts(set: &dyn Dataset) -> Vec<usize> {
    let mut counts = vec![0; set.num_classes()];
    for &l in set.labels() {
        if let Some(c) = counts.get_mut(l as usize) {
            *c += 1;
        }
    }
    counts
}

/// Worker threads for decoding: the flag, else the machine's parallelism.
pub fn workers(cfg: &RunConfig) -> usize {
    cfg.data.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}
