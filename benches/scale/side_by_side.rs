//! The per-checkpoint comparison that machine noise cannot skew: at the end of the run, a second
//! store is filled to the run's 1% point, and checkpoints into the full store and into that one
//! alternate, so that both sides see the same machine at the same moments.
//!
//! Owns the reference store's filling and the alternation; the run itself is the caller's.

use std::time::Instant;

use layercas::store::Store;
use layercas::{StoreConfig, Writer};
use serde_json::{Value, json};

use crate::under::Under;
use crate::{Knobs, checkpoint, median, run_span};

/// Fills `reference` (an empty backend) with the run's first `one_percent` checkpoints, then
/// alternates `k.sample` checkpoints into the full store (`writer`, after checkpoint `done`)
/// and into the reference. Returns both medians (time and requests) and their ratios.
pub async fn compare(
    writer: &Writer,
    u: &Under,
    reference: &Under,
    k: &Knobs,
    (one_percent, done): (u64, u64),
) -> Value {
    let store = Store::open_or_create(reference.backend.clone(), StoreConfig::default_config())
        .await
        .unwrap();
    let small = Writer::new(store).await.unwrap();
    let started = Instant::now();
    run_span(&small, reference, k, 0..one_percent).await;
    let fill_secs = started.elapsed().as_secs_f64();
    let (mut full, mut ref_) = (Side::default(), Side::default());
    for j in 0..k.sample {
        full.measure(writer, u, k, done + j).await;
        ref_.measure(&small, reference, k, one_percent + j).await;
    }
    let pairwise: Vec<f64> = full
        .secs
        .iter()
        .zip(&ref_.secs)
        .map(|(a, b)| a / b)
        .collect();
    let (f, r) = (full.figures(), ref_.figures());
    json!({"full": f, "at_1_percent": r, "fill_secs": fill_secs,
        "checkpoint_ms_ratio": f["checkpoint_ms"].as_f64().unwrap() / r["checkpoint_ms"].as_f64().unwrap(),
        "checkpoint_ms_pairwise_median_ratio": median(&pairwise),
        "checkpoint_requests_ratio": f["checkpoint_requests"].as_f64().unwrap() / r["checkpoint_requests"].as_f64().unwrap()})
}

/// One side's measured checkpoints.
#[derive(Default)]
struct Side {
    secs: Vec<f64>,
    requests: Vec<f64>,
}

impl Side {
    async fn measure(&mut self, writer: &Writer, u: &Under, k: &Knobs, i: u64) {
        let before = u.requests();
        self.secs.push(checkpoint(writer, u, k, i).await.0);
        self.requests.push((u.requests() - before) as f64);
    }

    fn figures(&self) -> Value {
        json!({"checkpoint_ms": median(&self.secs) * 1e3,
            "checkpoint_requests": median(&self.requests), "measured": self.secs.len()})
    }
}
