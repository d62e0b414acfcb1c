//! Measurement helpers shared by the benchmarks: settings from the environment, peak RSS.
#![allow(dead_code)] // each bench uses a different part of it

/// A numeric setting from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident set size since the last reset, in bytes (Linux).
pub fn peak_rss() -> u64 {
    status_bytes("VmHWM:")
}

/// A size field of /proc/self/status (such as `VmRSS:`), in bytes; 0 when absent.
pub fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok());
    kb.unwrap_or(0) * 1024
}

/// Resets the peak RSS counter so the next stage measures its own peak.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Bytes as MiB.
pub fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}
