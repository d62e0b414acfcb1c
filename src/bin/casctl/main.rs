//! casctl: the maintenance command line of a layercas store. A thin layer over the library.
//!
//! `main` only parses the command line, sets up logging, the runtime and Ctrl-C handling, and
//! maps the outcome to an exit code ([`output::Exit`]). Each command lives in `cmd/`; output
//! formatting in `output`; progress bars in `progress`. Library logic (walking directories,
//! resolving metadata, a sync pass) belongs in `layercas`, not here.

mod cmd;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use crate::cmd::{Command, Ctx, StoreArgs};
use crate::output::{EXIT_CODES_HELP, Exit, exit_of, print_error};

#[derive(Parser)]
#[command(
    name = "casctl",
    version,
    about = "Inspect, fill, restore and check a layercas store",
    after_help = EXIT_CODES_HELP
)]
struct Cli {
    #[command(flatten)]
    store: StoreArgs,
    /// Print machine-readable JSON on stdout instead of text (errors as JSON on stderr).
    #[arg(long, global = true)]
    json: bool,
    /// Log more (repeat for more detail); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_logging(cli.verbose);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let json = cli.json;
    let scratch = cli.command.scratch_dir();
    let ctx = Ctx {
        store: cli.store,
        json,
        create_store: cli.command.creates_store(),
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = cli.command.run(&ctx) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    // Stops what the command spawned before temporary files are removed under it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match outcome {
        Some(Ok(code)) => code.into(),
        Some(Err(e)) => {
            let code = exit_of(&e);
            print_error(json, &format!("{e:#}"), code);
            code.into()
        }
        None => interrupted(json, scratch),
    }
}

/// After Ctrl-C: removes the temporary files the command may have left, exits 130.
fn interrupted(json: bool, scratch: Option<std::path::PathBuf>) -> ExitCode {
    if let Some(dir) = scratch
        && let Err(e) = layercas::sync::workdir::remove_temporaries(&dir)
    {
        let msg = format!("removing temporary files under {}: {e}", dir.display());
        print_error(json, &msg, Exit::Interrupted);
    }
    print_error(json, "interrupted", Exit::Interrupted);
    Exit::Interrupted.into()
}

/// A command line clap refused: help and version go to stdout with 0, mistakes exit 2 (as JSON
/// under `--json`).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || !std::env::args().any(|a| a == "--json")
    {
        e.exit();
    }
    let message = e.render().to_string();
    print_error(true, message.trim_end(), Exit::Usage);
    Exit::Usage.into()
}

/// Packs and ranged reads are buffers of megabytes. glibc raises its mmap threshold after the
/// first such buffer is freed and then serves them from per-thread arenas, which keeps freed
/// memory resident; a fixed threshold returns every large buffer to the system when freed.
/// Other C libraries have no such knob (and no `mallopt`).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAYERCAS_LOG")
        .unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
