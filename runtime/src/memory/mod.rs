//! The memory a run will need, counted from its configuration before anything is allocated,
//! so a run that cannot fit is refused at once with the settings that make it big, instead of
//! being killed by the kernel (or failing an allocation) minutes into its first epoch.
//!
//! Every buffer is counted at 4 bytes an element (the f32 backends; the f64 reference oracle
//! needs twice the [`Place::Device`] parts), in u64 with checked arithmetic: a count that
//! overflows is a part of unknown size, which no memory holds. The counts follow what the
//! core plans (records, losses, scratch) and what the runtime holds around it (input staging,
//! the loader's prefetch, checkpoint copies), plus a slack for the allocator and the process
//! itself. Not counted: a data set held in memory (CIFAR's arrays, the digits) and stage 2's
//! test pass under `--eval-every-epoch`.

use std::fmt;

use anyhow::{bail, Result};

use crate::backend_choice::BackendChoice;

mod stages;

pub use stages::{estimate, estimate_linear};

/// Where a part lives: with the cpu backend both are host memory; with a GPU backend the
/// device parts are on the GPU and only the host parts in the machine's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Device,
    Host,
}

/// One share of the estimate: what it is, its bytes (`None`: more than a u64 counts) and the
/// flag that changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPart {
    pub what: &'static str,
    pub bytes: Option<u64>,
    pub flag: &'static str,
    pub place: Place,
}

/// The memory one stage of a run needs at its peak.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// `"stage 1"` or `"stage 2"`, for the messages.
    pub stage: &'static str,
    parts: Vec<MemoryPart>,
    slack: Option<u64>,
}

/// What the process holds beyond the buffers counted: peak resident sets measured with the
/// cpu backend ran 3 to 6 % above them for ResNet-18 at 64 px (stage 1: 906 MiB for 854
/// counted, 1421 for 1377 at batch 128 with a 65536-key queue; stage 2: 506 for 478), and 7
/// to 8 MiB above for the digits' tiny network (34 for 25, 17 for 9): vectors grown by
/// doubling while checkpoint bytes are collected, memory the allocator keeps after a free,
/// and the process's own code and threads (host memory only).
fn slack(parts: &[MemoryPart], runtime: bool) -> Option<u64> {
    let counted = parts
        .iter()
        .try_fold(0u64, |sum, p| sum.checked_add(p.bytes?))?;
    Some(counted / 10 + if runtime { 16 << 20 } else { 0 })
}

impl MemoryEstimate {
    /// The parts counted, largest first (a part too large to count first of all).
    pub fn parts(&self) -> &[MemoryPart] {
        &self.parts
    }

    /// Everything: the parts and the slack around them; `None` when a part, or the sum,
    /// overflows a u64.
    pub fn total(&self) -> Option<u64> {
        self.parts
            .iter()
            .try_fold(self.slack?, |sum, p| sum.checked_add(p.bytes?))
    }

    /// The parts in `place` alone (for a GPU backend, [`Place::Host`] is what the machine's
    /// memory must hold), with their own slack.
    pub fn only(&self, place: Place) -> MemoryEstimate {
        let parts: Vec<MemoryPart> = self
            .parts
            .iter()
            .copied()
            .filter(|p| p.place == place)
            .collect();
        MemoryEstimate {
            stage: self.stage,
            slack: slack(&parts, place == Place::Host),
            parts,
        }
    }

    fn new(stage: &'static str, mut parts: Vec<MemoryPart>) -> MemoryEstimate {
        parts.retain(|p| p.bytes != Some(0));
        // None (uncountable) sorts above every size.
        parts.sort_by_key(|p| std::cmp::Reverse(p.bytes.map_or(u128::MAX, u128::from)));
        MemoryEstimate {
            stage,
            slack: slack(&parts, true),
            parts,
        }
    }

    /// `about 1.5 GiB`, or `more than 16 EiB`.
    fn needs(&self) -> String {
        match self.total() {
            Some(total) => format!("about {}", show_bytes(Some(total))),
            None => show_bytes(None),
        }
    }
}

impl fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} needs {}", self.stage, self.needs())?;
        for p in &self.parts {
            write!(
                f,
                "\n  {:>10}  {} ({})",
                show_bytes(p.bytes),
                p.what,
                p.flag
            )?;
        }
        write!(
            f,
            "\n  {:>10}  allocator slack and the runtime itself",
            show_bytes(self.slack)
        )
    }
}

/// `1.5 GiB`; `None` reads as more than a u64 holds.
pub fn show_bytes(bytes: Option<u64>) -> String {
    let Some(bytes) = bytes else {
        return "more than 16 EiB".to_string();
    };
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Refuses an estimate larger than `available` bytes (`None`: unknown, so only an estimate
/// too large to count is refused), naming the total, what is available and the largest parts
/// with the flag that shrinks each.
pub fn check_fits(est: &MemoryEstimate, available: Option<u64>) -> Result<()> {
    const SHOWN: usize = 4;
    let fits = match (est.total(), available) {
        (None, _) => false,
        (Some(total), Some(available)) => total <= available,
        (Some(_), None) => true,
    };
    if fits {
        return Ok(());
    }
    let room = match available {
        Some(a) => format!("only {} is available", show_bytes(Some(a))),
        None => "no machine has that much".to_string(),
    };
    let mut message = format!(
        "{} of this run needs {} of memory and {room}; its largest parts, with the settings \
         that shrink each:",
        est.stage,
        est.needs()
    );
    for p in est.parts.iter().take(SHOWN) {
        message.push_str(&format!(
            "\n  {:>10}  {}: change {}",
            show_bytes(p.bytes),
            p.what,
            p.flag
        ));
    }
    bail!(message)
}

/// Refuses `est` when it cannot fit in this machine's free memory on `backend`: all of it on
/// the cpu backend, its host parts on a GPU backend (whose device parts live on the GPU).
pub fn check_on(est: &MemoryEstimate, backend: BackendChoice) -> Result<()> {
    let available = available_host_memory();
    match backend {
        BackendChoice::Cpu | BackendChoice::Reference => check_fits(est, available),
        BackendChoice::Cuda | BackendChoice::Wgpu => {
            // An uncountable device part still cannot fit anywhere.
            check_fits(&est.only(Place::Device), None)?;
            check_fits(&est.only(Place::Host), available)
        }
    }
}

/// The memory the machine can give this process now: Linux's `MemAvailable`, or less when
/// the process's cgroup (a container's memory limit) leaves less room. `None` where neither
/// can be read (other systems).
pub fn available_host_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo.as_deref().and_then(mem_available);
    let cgroup = cgroup_headroom(
        std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok(),
        std::fs::read_to_string("/sys/fs/cgroup/memory.current").ok(),
    );
    match (available, cgroup) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let rest = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let mut words = rest.split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// What a cgroup v2 limit leaves: `memory.max` (a number, or `max` for none) less
/// `memory.current`.
fn cgroup_headroom(max: Option<String>, current: Option<String>) -> Option<u64> {
    let max: u64 = max?.trim().parse().ok()?;
    let current: u64 = current?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn available_memory_reads_meminfo_and_the_cgroup_limit() {
        let meminfo = "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(mem_available(meminfo), Some(20_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(
            cgroup_headroom(Some("8589934592\n".into()), Some("1073741824\n".into())),
            Some(7 * GIB)
        );
        assert_eq!(
            cgroup_headroom(Some("max\n".into()), Some("1073741824\n".into())),
            None
        );
        #[cfg(target_os = "linux")]
        assert!(available_host_memory().is_some_and(|a| a > 0));
    }
}
