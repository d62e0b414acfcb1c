//! `casctl init`: create a store with explicit chunking and pack settings.

use anyhow::{Result, bail};
use layercas::format::config::{ChunkerParams, StoreConfig};
use layercas::store::Store;

use super::Ctx;
use crate::output::{Exit, emit};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 16 << 10)]
    chunk_min: u32,
    #[arg(long, default_value_t = 32 << 10)]
    chunk_avg: u32,
    #[arg(long, default_value_t = 128 << 10)]
    chunk_max: u32,
    #[arg(long, default_value_t = 16 << 20)]
    pack_size: u64,
    #[arg(long, default_value_t = 2)]
    zstd_level: i32,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit> {
    let config = StoreConfig::new(
        ChunkerParams::fastcdc(a.chunk_min, a.chunk_avg, a.chunk_max),
        a.pack_size,
        a.zstd_level,
    );
    let store = Store::open_or_create(ctx.open().await?.backend, config.clone()).await?;
    if store.config().store_id != config.store_id {
        bail!("the store already exists with its own configuration");
    }
    emit(ctx.json, store.config(), |c| {
        format!("created store {}", hex::encode(c.store_id))
    });
    Ok(Exit::Ok)
}
