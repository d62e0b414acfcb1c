//! `casctl verify`: check every checkpoint's data; exit 1 when errors are found.

use anyhow::Result;
use layercas::backend::local::StagingReport;
use layercas::store::Store;
use layercas::verify::{VerifyOptions, VerifyReport, verify};
use serde::Serialize;

use super::Ctx;
use crate::output::{Exit, UsageError, emit, lowercase_first};
use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// Read every pack in full and re-hash every chunk.
    #[arg(long)]
    read_data: bool,
    /// Read only the N-th of M deterministic slices of the packs (N/M, 1 <= N <= M), so
    /// that M runs cover the store.
    #[arg(long, value_name = "N/M", conflicts_with = "read_data")]
    read_data_subset: Option<String>,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit> {
    let subset = a
        .read_data_subset
        .as_deref()
        .map(parse_subset)
        .transpose()?;
    let read_data = a.read_data || subset.is_some();
    let store = Store::open(ctx.open().await?.backend).await?;
    // With --read-data the library reports bytes read, otherwise packs checked.
    let (p, pb) = if read_data {
        progress::bar("verify", !ctx.json)
    } else {
        progress::counter("verify", "packs", !ctx.json)
    };
    let report = verify(&store, VerifyOptions { read_data, subset }, p).await;
    progress::finish(pb);
    let out = VerifyOutput {
        report: report?,
        staging: super::staging_report(ctx)?,
    };
    emit(ctx.json, &out, to_text);
    let report = out.report;
    Ok(if report.errors() > 0 {
        Exit::Findings
    } else {
        Exit::Ok
    })
}

/// The report, plus a local store's staging files (not errors: leftovers of killed writers,
/// which the next write removes).
#[derive(Serialize)]
struct VerifyOutput {
    #[serde(flatten)]
    report: VerifyReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    staging: Option<StagingReport>,
}

fn to_text(out: &VerifyOutput) -> String {
    let r = &out.report;
    let mut lines: Vec<String> = r
        .problems
        .iter()
        .map(|p| lowercase_first(&format!("{:?}: {}: {}", p.severity, p.key, p.message)))
        .collect();
    lines.push(format!(
        "checked {} manifests, {} index objects, {} packs ({} read, {} chunks re-hashed): {} errors, {} warnings",
        r.manifests,
        r.index_objects,
        r.packs,
        r.packs_read,
        r.blobs_checked,
        r.errors(),
        r.problems.len() - r.errors()
    ));
    if let Some(s) = &out.staging {
        lines.push(super::staging_line(s).trim_start().to_string());
    }
    lines.join("\n")
}

/// Parses `N/M` with 1 <= N <= M.
fn parse_subset(s: &str) -> Result<(u64, u64), UsageError> {
    let parsed = s
        .split_once('/')
        .and_then(|(n, m)| Some((n.parse::<u64>().ok()?, m.parse::<u64>().ok()?)));
    match parsed {
        Some((n, m)) if n >= 1 && n <= m => Ok((n, m)),
        _ => Err(UsageError(format!(
            "--read-data-subset wants N/M with 1 <= N <= M, not {s:?}"
        ))),
    }
}
