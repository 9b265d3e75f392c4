//! The vectors-file reader of `runtime verify` on arbitrary text: an error, or vectors whose
//! every matrix has the shape the header states and whose every value is finite; never a panic.
//! Small accepted files are also evaluated on the reference backend, as `runtime verify` does.
#![no_main]

use dscl_core::reference::ReferenceBackend;
use dscl_runtime::io::vectors::Vectors;
use dscl_runtime::verify;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(v) = Vectors::from_json(text) else {
        return;
    };
    let p = &v.problem;
    let (b, d, k, c) = (p.shape.batch, p.shape.dim, p.shape.queue_len, p.crops);
    assert_eq!(p.queries.len(), b * d);
    assert_eq!(p.keys.len(), b * d);
    assert_eq!(p.queue.len(), k * d);
    assert_eq!(p.labels.len(), b);
    assert_eq!(p.queue_labels.len(), k);
    assert_eq!(p.teachers.len(), c * b * d);
    assert_eq!(p.students.len(), c * b * d);
    assert!(p
        .labels
        .iter()
        .chain(&p.queue_labels)
        .all(|&y| y < p.shape.num_classes));
    let inputs = [&p.queries, &p.keys, &p.queue, &p.teachers, &p.students];
    assert!(inputs.iter().all(|m| m.iter().all(|x| x.is_finite())));
    assert!(v.temperature.is_finite() && v.temperature > 0.0);
    assert!(v.beta.is_finite() && v.beta >= 0.0);
    // The file's numbers need not be normalised rows: evaluation may refuse them, but must not
    // panic.
    let _ = verify::evaluate(&ReferenceBackend::<f64>::new(), &v);
});
