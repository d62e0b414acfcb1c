//! `casctl repair`: repairs of a damaged store. `repair index` rebuilds index objects from pack
//! tables (`layercas::gc::repair`). Owns the arguments and the printing only.

use anyhow::Result;
use layercas::gc::repair::{RepairReport, repair_index};
use layercas::store::Store;

use super::Ctx;
use crate::output::{Exit, emit};

/// The repairs.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Create index objects for every pack no index object names, from the pack's own table
    /// (packs whose table is damaged are skipped and listed). Safe while writers write.
    Index(IndexArgs),
}

#[derive(clap::Args)]
pub struct IndexArgs {
    /// Read and report only; write nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(ctx: &Ctx, c: Command) -> Result<Exit> {
    let Command::Index(a) = c;
    let store = Store::open(ctx.open().await?.backend).await?;
    let report = repair_index(&store, a.dry_run).await?;
    emit(ctx.json, &report, to_text);
    Ok(Exit::Ok)
}

fn to_text(r: &RepairReport) -> String {
    let mut lines: Vec<String> = r
        .index_objects_unreadable
        .iter()
        .map(|s| format!("unreadable index object {}: {}", s.pack, s.error))
        .chain(
            r.packs_skipped
                .iter()
                .map(|s| format!("skipped damaged pack {}: {}", s.pack, s.error)),
        )
        .collect();
    lines.push(format!(
        "{}{} packs, {} named by index objects; {} {} packs ({} entries) into {} index objects; {} damaged packs skipped",
        if r.dry_run { "dry run: " } else { "" },
        r.packs,
        r.packs_indexed,
        if r.dry_run { "would adopt" } else { "adopted" },
        r.packs_adopted.len(),
        r.entries_adopted,
        if r.dry_run {
            "new".to_string()
        } else {
            r.index_objects_written.len().to_string()
        },
        r.packs_skipped.len()
    ));
    lines.join("\n")
}
