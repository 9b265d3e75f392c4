//! Graceful preemption. SIGINT and SIGTERM (what Slurm and other schedulers send a job before
//! they kill it) ask a training run to stop at the end of its current step: it writes a
//! checkpoint there, prints the exact command that resumes it, and exits with 128 + the
//! signal's number, as a shell reports a process ended by that signal. A second signal of either
//! kind, while the first is being honoured, takes the signal's default action at once.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};

struct Flags {
    /// Set by the first signal of either kind; a signal that finds it set ends the process.
    any: Arc<AtomicBool>,
    interrupt: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Installs the handlers (once per process; later calls do nothing).
pub fn install() -> Result<()> {
    if FLAGS.get().is_some() {
        return Ok(());
    }
    let flags = Flags {
        any: Arc::new(AtomicBool::new(false)),
        interrupt: Arc::new(AtomicBool::new(false)),
        terminate: Arc::new(AtomicBool::new(false)),
    };
    for (signal, own) in [(SIGINT, &flags.interrupt), (SIGTERM, &flags.terminate)] {
        // Registered first, so it sees `any` as the previous signal left it.
        signal_hook::flag::register_conditional_default(signal, Arc::clone(&flags.any))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&flags.any)))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(own)))
            .with_context(|| format!("installing the handler of signal {signal}"))?;
    }
    let _ = FLAGS.set(flags);
    Ok(())
}

/// The signal that asked the run to stop, if one came.
pub fn requested() -> Option<i32> {
    let flags = FLAGS.get()?;
    if flags.terminate.load(Ordering::SeqCst) {
        Some(SIGTERM)
    } else if flags.interrupt.load(Ordering::SeqCst) {
        Some(SIGINT)
    } else {
        None
    }
}

/// A run stopped by a signal after a step, its state saved (the error a training loop returns
/// so the command can say how to resume and exit with 128 + `signal`).
#[derive(Debug)]
pub struct Interrupted {
    pub signal: i32,
    /// What was saved, for the message.
    pub saved: String,
}

impl Interrupted {
    pub fn exit_code(&self) -> u8 {
        u8::try_from(128 + self.signal).unwrap_or(u8::MAX)
    }
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.signal {
            SIGINT => "SIGINT",
            SIGTERM => "SIGTERM",
            _ => "a signal",
        };
        write!(f, "stopped by {name} after a complete step; {}", self.saved)
    }
}

impl std::error::Error for Interrupted {}

/// The command line that continues an interrupted invocation: `args` (the program's own,
/// program name first) with `--resume` added where `resumable` and `--overwrite` dropped (the
/// run to continue is the one just written), shell-quoted.
pub fn resume_command(args: &[String], resumable: bool) -> String {
    let mut out: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--overwrite")
        .collect();
    if resumable && !out.contains(&"--resume") {
        out.push("--resume");
    }
    shlex::try_join(out.iter().copied()).unwrap_or_else(|_| out.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_command_continues_the_run() {
        let args: Vec<String> = ["runtime", "train", "--out", "my run", "--overwrite"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            resume_command(&args, true),
            "runtime train --out 'my run' --resume"
        );
        let again: Vec<String> = ["runtime", "train", "--resume"].map(String::from).to_vec();
        assert_eq!(resume_command(&again, true), "runtime train --resume");
        let linear: Vec<String> = ["runtime", "linear", "--checkpoint", "a"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            resume_command(&linear, false),
            "runtime linear --checkpoint a"
        );
    }
}
