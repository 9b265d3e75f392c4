//! The `runtime` command: [`cli`] parses the command line, [`commands`] runs the command.

mod cli;
mod commands;

use std::process::ExitCode;

use dscl_runtime::interrupt::{self, Interrupted};

fn main() -> ExitCode {
    report_file_size_limit_as_an_error();
    let (cli, given) = cli::parse();
    let resumable = cli.command.resumable();
    if let Err(err) = interrupt::install() {
        eprintln!("error: {err:#}");
        return ExitCode::from(2);
    }
    match commands::run(cli.command, &given) {
        Ok(code) => code,
        Err(err) => match err.downcast_ref::<Interrupted>() {
            Some(stop) => {
                let args: Vec<String> = std::env::args().collect();
                eprintln!("{stop}");
                eprintln!(
                    "resume with: {}",
                    interrupt::resume_command(&args, resumable)
                );
                ExitCode::from(stop.exit_code())
            }
            None => {
                eprintln!("error: {err:#}");
                ExitCode::from(2)
            }
        },
    }
}

/// Lets a write beyond the file-size limit (`ulimit -f`, set by some batch schedulers) fail
/// with EFBIG, which the output-directory check and the checkpoint writer report with the
/// file's name, instead of the default action of SIGXFSZ killing the process without a word.
#[cfg(unix)]
fn report_file_size_limit_as_an_error() {
    // SAFETY: called first thing in `main`, before any other thread exists; SIG_IGN installs
    // no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

#[cfg(not(unix))]
fn report_file_size_limit_as_an_error() {}
