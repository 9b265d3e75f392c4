//! The backend's fault slot: kernels record value errors here instead of failing, as a device
//! would, and the caller collects them with `take_fault`.

use crate::error::{Fault, FaultKind};
use core::cell::Cell;

/// Holds the first value fault recorded since it was last taken; later faults are dropped, so
/// the report points at the earliest problem.
#[derive(Debug, Default)]
pub struct FaultSlot {
    first: Cell<Option<Fault>>,
}

impl FaultSlot {
    pub const fn new() -> Self {
        FaultSlot {
            first: Cell::new(None),
        }
    }

    /// Keeps `fault` unless an earlier one is still pending.
    pub fn record(&self, fault: Fault) {
        if self.first.get().is_none() {
            self.first.set(Some(fault));
        }
    }

    pub fn non_finite(&self, index: usize) {
        self.record(Fault {
            kind: FaultKind::NonFinite,
            index,
            value: 0,
        });
    }

    pub fn zero_norm_row(&self, row: usize) {
        self.record(Fault {
            kind: FaultKind::ZeroNormRow,
            index: row,
            value: 0,
        });
    }

    pub fn label_out_of_range(&self, index: usize, label: u32) {
        self.record(Fault {
            kind: FaultKind::LabelOutOfRange,
            index,
            value: label,
        });
    }

    /// Returns the pending fault and clears the slot.
    pub fn take(&self) -> Option<Fault> {
        self.first.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fault_wins_and_take_clears() {
        let slot = FaultSlot::new();
        assert_eq!(slot.take(), None);
        slot.zero_norm_row(3);
        slot.non_finite(1);
        assert_eq!(
            slot.take(),
            Some(Fault {
                kind: FaultKind::ZeroNormRow,
                index: 3,
                value: 0
            })
        );
        assert_eq!(slot.take(), None);
        slot.label_out_of_range(2, 9);
        assert_eq!(
            slot.take().map(|f| (f.kind, f.index, f.value)),
            Some((FaultKind::LabelOutOfRange, 2, 9))
        );
    }
}
