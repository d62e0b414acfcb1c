//! A pageserver's whole integration; `tests/pageserver.rs` runs it. Args: WORKDIR CONFIG.toml
use layercas::sync::{CancellationToken, SyncConfig, SyncStateSink, TimelineSyncState, workdir};
use prometheus_client::registry::Registry;
type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
pub async fn run(dir: &str, toml: &str, states: impl SyncStateSink, reg: &mut Registry) -> Res<()> {
    let (config, cancel) = (SyncConfig::from_toml(dir, toml)?, CancellationToken::new());
    let sync = layercas::start_local_timeline_sync(&config, states, reg, &cancel).await?;
    let handle = sync.handle.ok_or("no [remote_storage] section")?; // metrics are in `reg`
    for (&(tenant, timeline), state) in &sync.states {
        if let TimelineSyncState::CloudOnly(_) | TimelineSyncState::AwaitsDownload(_) = state {
            handle.schedule_timeline_download(tenant, timeline)?; // on attach
        } else if let TimelineSyncState::Ready(_) = state {
            let tl = workdir::timeline_dir(dir.as_ref(), &tenant, &timeline); // after a checkpoint
            let metadata = tokio::fs::read(tl.join("metadata")).await?; // the pageserver has these
            let layers = tokio::task::spawn_blocking(move || workdir::layer_files(&tl)).await??;
            let lsn = handle.schedule_upload(tenant, timeline, layers, &metadata)?;
            handle.wait_uploaded(tenant, timeline, lsn, &cancel).await?; // durable in the store
        }
    }
    handle.wait_idle().await?;
    Ok(handle.shutdown().await)
}
#[tokio::main]
async fn main() -> Res<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel(); // the states
    let args: Vec<String> = std::env::args().collect(); // WORKDIR CONFIG.toml
    let toml = tokio::fs::read_to_string(&args[2]).await?;
    run(&args[1], &toml, tx, &mut Default::default()).await?;
    Ok(std::iter::from_fn(|| rx.try_recv().ok()).for_each(|(t, tl, s)| println!("{t}/{tl}: {s}")))
}
