//! The CIFAR binary record parser on arbitrary bytes, as CIFAR-10 and as CIFAR-100: an error,
//! or a data set whose labels are in range and whose every record loads as a 32 x 32 image
//! with values in [0, 1]; never a panic.
#![no_main]

use std::path::Path;

use dscl_runtime::data::{CifarBinary, CifarKind, Dataset, Split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    for kind in [CifarKind::Cifar10, CifarKind::Cifar100] {
        let Ok(data) = CifarBinary::parse(bytes, kind, Split::Train, Path::new("batch.bin")) else {
            continue;
        };
        assert!(!data.is_empty());
        for i in 0..data.len() {
            assert!((data.labels()[i] as usize) < kind.num_classes());
            let image = data.load(i).expect("an in-memory record always loads");
            assert_eq!((image.width, image.height), (32, 32));
            assert!(image.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
            let _ = data.describe(i);
        }
    }
});
