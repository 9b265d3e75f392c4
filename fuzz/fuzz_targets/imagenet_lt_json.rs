//! The ImageNet-LT annotation JSON parser on arbitrary bytes: an error or a data set whose
//! labels are all below its class count; never a panic.
#![no_main]

use std::path::Path;

use dscl_runtime::data::{Dataset, ImageNetLtJson};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(data) = ImageNetLtJson::parse(
        bytes,
        Path::new("ImageNet_LT_train.json"),
        Path::new("root"),
    ) else {
        return;
    };
    assert!(!data.is_empty());
    for (i, &label) in data.labels().iter().enumerate() {
        assert!(
            (label as usize) < data.num_classes(),
            "label {label} of entry {i}"
        );
        let _ = data.describe(i);
        let _ = data.path(i);
    }
});
