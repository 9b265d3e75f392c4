//! The list-file parser (`relative/path label` per line) on arbitrary bytes: an error or a
//! data set whose labels are below its class count and whose entries can all be described;
//! never a panic. An accepted list is parsed again with its class count given, which must
//! agree, and with one class fewer, which must be refused.
#![no_main]

use std::path::Path;

use dscl_runtime::data::{Dataset, ListFile};
use libfuzzer_sys::fuzz_target;

fn parse(bytes: &[u8], num_classes: Option<usize>) -> Option<ListFile> {
    ListFile::parse(bytes, Path::new("list.txt"), Path::new("root"), num_classes).ok()
}

fuzz_target!(|bytes: &[u8]| {
    let Some(list) = parse(bytes, None) else {
        return;
    };
    assert!(!list.is_empty());
    assert_eq!(list.labels().len(), list.len());
    let classes = list.num_classes();
    for (i, &label) in list.labels().iter().enumerate() {
        assert!((label as usize) < classes, "label {label} of entry {i}");
        assert!(list.line(i) >= 1);
        let _ = list.describe(i);
        let _ = list.path(i);
    }
    let given = parse(bytes, Some(classes)).expect("the list's own class count is accepted");
    assert_eq!(given.labels(), list.labels());
    assert!(
        parse(bytes, Some(classes - 1)).is_none(),
        "the largest label is refused"
    );
});
