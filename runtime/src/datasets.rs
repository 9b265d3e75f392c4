//! Opens the training and test data named by the flags.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};

use crate::config::{DataKind, RunConfig};
use crate::data::{
    CifarBinary, Dataset, Digits, ImageFolder, ImageNetLtJson, ListFile, Split, Subset,
};

fn root_for(cfg: &RunConfig, file: &Path) -> PathBuf {
    cfg.data.root.clone().unwrap_or_else(|| {
        file.parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    })
}

/// The training set (long-tailed where the flags ask for it).
pub fn open_train(cfg: &RunConfig) -> Result<Arc<dyn Dataset>> {
    let d = &cfg.data;
    let set: Arc<dyn Dataset> = match cfg.data_kind {
        DataKind::List => {
            let list = d
                .train_list
                .as_ref()
                .ok_or_else(|| anyhow!("no --train-list"))?;
            Arc::new(ListFile::open(list, &root_for(cfg, list), None)?)
        }
        DataKind::ImageNetLt => {
            let json = d
                .imagenet_lt_json
                .as_ref()
                .ok_or_else(|| anyhow!("no --imagenet-lt-json"))?;
            Arc::new(ImageNetLtJson::open(json, &root_for(cfg, json))?)
        }
        DataKind::ImageFolder => {
            let dir = d
                .image_folder
                .as_ref()
                .ok_or_else(|| anyhow!("no --image-folder"))?;
            Arc::new(ImageFolder::open(dir)?)
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
    Ok(set)
}

/// The test set: `--test-list`, `--imagenet-lt-test-json` or `--test-image-folder` when
/// given, else the test split of CIFAR or the digits.
pub fn open_test(cfg: &RunConfig, num_classes: usize) -> Result<Arc<dyn Dataset>> {
    let d = &cfg.data;
    let set: Arc<dyn Dataset> = if let Some(list) = &d.test_list {
        Arc::new(ListFile::open(
            list,
            &root_for(cfg, list),
            Some(num_classes),
        )?)
    } else if let Some(json) = &d.imagenet_lt_test_json {
        Arc::new(ImageNetLtJson::open(json, &root_for(cfg, json))?)
    } else if let Some(dir) = &d.test_image_folder {
        Arc::new(ImageFolder::open(dir)?)
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
    if set.num_classes() > num_classes {
        bail!(
            "the test set has {} classes but the model was trained on {num_classes}",
            set.num_classes()
        );
    }
    Ok(set)
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
