//! `casctl generate`: write a deterministic sample pageserver workdir.

use std::path::PathBuf;

use anyhow::Result;

use super::Ctx;
use super::demo;
use crate::output::{Exit, emit, size};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Checkpoints after the first.
    #[arg(long, default_value_t = 2)]
    steps: usize,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<Exit> {
    let summary = demo::generate(&a.dir, a.seed, a.steps)?;
    emit(ctx.json, &summary, |s| {
        format!(
            "wrote {} timelines, {} files, {} under {}",
            s.timelines,
            s.files,
            size(s.bytes),
            a.dir.display()
        )
    });
    Ok(Exit::Ok)
}
