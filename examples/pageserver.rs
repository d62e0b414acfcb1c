//! A pageserver's whole integration with layercas: start the sync loop from the `[remote_storage]`
//! section (metrics into the caller's registry), upload a timeline after its checkpoint (layer
//! files plus the `metadata` file's bytes, kept verbatim), download the timelines the store has on
//! attach, states into the caller's channel, shutdown.
//! Run: `cargo run --example pageserver -- WORKDIR CONFIG.toml`.
use layercas::sync::workdir::{layer_files, timeline_dir};
use layercas::sync::{CancellationToken, SyncConfig, SyncStateSink, TimelineSyncState as S};
use prometheus_client::registry::Registry;
type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub async fn run(dir: &str, toml: &str, states: impl SyncStateSink, reg: &mut Registry) -> Res<()> {
    let (config, cancel) = (SyncConfig::from_toml(dir, toml)?, CancellationToken::new());
    let sync = layercas::start_local_timeline_sync(&config, states, reg, &cancel).await?;
    let handle = sync.handle.ok_or("no [remote_storage] section")?;
    for (&(tenant, timeline), state) in &sync.states {
        if let S::CloudOnly(_) | S::AwaitsDownload(_) = state {
            handle.schedule_timeline_download(tenant, timeline)?; // on attach
        } else if let S::Ready(_) = state {
            let tl = timeline_dir(dir.as_ref(), &tenant, &timeline); // after a checkpoint:
            let metadata = std::fs::read(tl.join("metadata"))?; // (the pageserver has these)
            let lsn = handle.schedule_upload(tenant, timeline, layer_files(&tl)?, &metadata)?;
            handle.wait_uploaded(tenant, timeline, lsn, &cancel).await?; // durable in the store
        }
    }
    handle.wait_idle().await?;
    Ok(handle.shutdown().await)
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect(); // WORKDIR CONFIG.toml
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let config = std::fs::read_to_string(&args[2])?;
    run(&args[1], &config, tx, &mut Registry::default()).await?;
    std::iter::from_fn(|| rx.try_recv().ok()).for_each(|(t, tl, s)| println!("{t}/{tl}: {s}"));
    Ok(())
}
