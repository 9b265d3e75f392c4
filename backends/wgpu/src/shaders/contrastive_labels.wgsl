// The first contrast label >= num_classes among the first valid columns, recorded as
// LabelOutOfRange (column, label). One workgroup, dispatched before the rows so that, as in
// the reference, a label fault wins over the rows' non-finite faults and the lowest column is
// the one reported. pu(0) = valid columns, pu(1) = num_classes.

@group(0) @binding(0) var<storage, read> labels: array<u32>;

@compute @workgroup_size(256)
fn contrastive_labels(@builtin(local_invocation_index) t: u32) {
    let valid = pu(0u);
    let classes = pu(1u);
    var first = 0xffffffffu;
    for (var j = t; j < valid; j = j + ROW_WG) {
        if (labels[j] >= classes) {
            first = j;
            break;
        }
    }
    let j = reduce_min_u(t, first);
    if (t == 0u && j < valid) {
        record_fault(FAULT_LABEL_OUT_OF_RANGE, j, labels[j]);
    }
}
