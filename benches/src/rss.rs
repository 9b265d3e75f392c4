//! Resident memory of this process, from Linux's `/proc/self`.
//!
//! The measure used for "peak memory of one step" (the PyTorch side does the same): read
//! `VmRSS`, write `5` to `/proc/self/clear_refs` (resets the peak `VmHWM` to the current RSS),
//! run the step, read `VmHWM`; the difference is the step's extra peak resident memory.

use std::fs;
use std::io;

/// A `/proc/self/status` field in bytes (`VmRSS`, `VmHWM`, ...).
pub fn status_bytes(field: &str) -> io::Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
        .ok_or_else(|| io::Error::other(format!("no {field} in /proc/self/status")))
}

/// Resets the peak resident set size (`VmHWM`) to the current one.
pub fn reset_peak() -> io::Result<()> {
    fs::write("/proc/self/clear_refs", "5")
}

/// Runs `f` and returns its result with the peak resident memory above the RSS at entry, in
/// bytes.
pub fn peak_extra<T>(f: impl FnOnce() -> T) -> io::Result<(T, u64)> {
    let before = status_bytes("VmRSS")?;
    reset_peak()?;
    let value = f();
    let peak = status_bytes("VmHWM")?;
    Ok((value, peak.saturating_sub(before)))
}

pub const MIB: f64 = 1024.0 * 1024.0;
