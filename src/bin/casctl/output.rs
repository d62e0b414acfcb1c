//! What casctl prints: results as text or `--json` on stdout, errors as text or JSON on stderr,
//! sizes in human units, and the exit codes.
//!
//! Owns formatting and the exit-code table. Must not run store operations.

use std::io::Write;
use std::process::ExitCode;

use serde::Serialize;

// `duplicates` pairs this enum with format::envelope's `Kind` by shape alone (numbered variants).
/// Exit codes, as `casctl --help` documents them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The command did what was asked and found nothing wrong.
    Ok = 0,
    /// It ran, and found problems (verify errors, evicted timelines, a failed demo).
    Findings = 1,
    /// The command line was wrong.
    Usage = 2,
    /// The operation failed.
    Failed = 3,
    /// `restore` refused a destination that is not empty (pass `--overwrite`).
    NotEmpty = 4,
    /// Interrupted by Ctrl-C (SIGINT).
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// The exit-code table shown after `casctl --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    findings: verify found errors, sync left timelines evicted or skipped, the demo failed
  2    usage error (bad arguments)
  3    the operation failed
  4    restore refused a non-empty destination (pass --overwrite to replace its content)
  130  interrupted (Ctrl-C); temporary files were removed

With --json, results are JSON on stdout and errors are JSON on stderr:
  {\"error\": \"...\", \"exit_code\": N}";

/// An error in how casctl was called (exit code 2) rather than in the operation.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Returns early with a [`UsageError`].
#[macro_export]
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err($crate::output::UsageError(format!($($arg)*)).into())
    };
}

/// The exit code of a failed command: usage for [`UsageError`] or invalid input handed to the
/// library, otherwise "operation failed".
pub fn exit_of(e: &anyhow::Error) -> Exit {
    let usage = e.chain().any(|c| {
        c.is::<UsageError>() || matches!(c.downcast_ref(), Some(layercas::Error::InvalidInput(_)))
    });
    if usage { Exit::Usage } else { Exit::Failed }
}

/// Prints an error on stderr, as JSON under `--json`.
pub fn print_error(json: bool, message: &str, code: Exit) {
    let text = if json {
        serde_json::json!({ "error": message, "exit_code": code as u8 }).to_string()
    } else {
        format!("casctl: error: {message}")
    };
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Prints `value` as JSON or as the text `text` makes of it.
pub fn emit<T: Serialize>(json: bool, value: &T, text: impl FnOnce(&T) -> String) {
    let out = if json {
        serde_json::to_string_pretty(value).expect("serializable")
    } else {
        text(value)
    };
    // A closed pipe (`casctl ls | head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout().lock(), "{out}");
}

/// A byte count for people: `1.50 MiB`.
pub fn size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// `s` with its first letter in lower case.
pub fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}
