//! A real PostgreSQL cluster under pgbench load, seen as a pageserver timeline: after each SQL
//! `CHECKPOINT` the relation files under `base/` become image layers named with the checkpoint's
//! LSN (a relation file unchanged since the previous checkpoint keeps its layer), the WAL written
//! since the previous checkpoint becomes delta layers (one per segment it touches), and the
//! timeline's `metadata` file is rewritten in layercas's format.
//!
//! Owns the server's life: started on a private Unix socket in a temporary directory (as the
//! `postgres` user when run as root), stopped when [`PgDataset`] is dropped, also on panic.
//! Must not touch anything outside its temporary directory and the workdir it is given.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use layercas::format::metadata::{METADATA_FILE_NAME, TimelineMetadata};
use layercas::id::{Lsn, TenantId, TimelineId};

use super::proc;

const WAL_SEGMENT: u64 = 16 << 20;
const PORT: &str = "5432";

/// Where initdb, pg_ctl, pgbench and psql are: `LAYERCAS_PG_BIN`, else the newest
/// /usr/lib/postgresql/N/bin, else none (found on PATH).
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LAYERCAS_PG_BIN") {
        return Some(dir.into());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

fn tool(name: &str) -> PathBuf {
    match bin_dir() {
        Some(dir) if dir.join(name).is_file() => dir.join(name),
        _ => PathBuf::from(name),
    }
}

/// Why PostgreSQL cannot be used here, or None when initdb, pg_ctl, pgbench and psql all run.
pub fn missing() -> Option<String> {
    let absent: Vec<&str> = ["initdb", "pg_ctl", "pgbench", "psql"]
        .into_iter()
        .filter(|t| !proc::available(tool(t).to_str().unwrap_or(t), "--version"))
        .collect();
    (!absent.is_empty()).then(|| {
        format!(
            "{} not found (install Debian's postgresql package, or set LAYERCAS_PG_BIN)",
            absent.join(", ")
        )
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A server-side command: as the `postgres` user when we are root (the server refuses root).
fn server_cmd(name: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(tool(name));
        c
    } else {
        Command::new(tool(name))
    }
}

/// The running cluster, and the timeline its checkpoints are written into.
pub struct PgDataset {
    /// Holds the data directory and the socket; removed after the server stops.
    tmp: tempfile::TempDir,
    running: bool,
    timeline_dir: PathBuf,
    transactions: u64,
    /// Relation file (relative to base/) -> (mtime, size, layer name) at its last image layer.
    images: HashMap<PathBuf, (SystemTime, u64, String)>,
    deltas: Vec<String>,
    last_lsn: Option<u64>,
}

impl PgDataset {
    /// initdb, start the server, `pgbench -i -s scale`; the workdir's timeline stays empty
    /// until the first [`PgDataset::checkpoint`].
    pub fn start(workdir: &Path, scale: u64, transactions: u64) -> PgDataset {
        let tmp = tempfile::Builder::new()
            .prefix("layercas-pg")
            .tempdir()
            .unwrap();
        if is_root() {
            let id = |flag| proc::first_line("id", &[flag, "postgres"]).parse().ok();
            std::os::unix::fs::chown(tmp.path(), id("-u"), id("-g")).expect("chown to postgres");
        }
        let (tenant, timeline) = (TenantId([0x7e; 16]), TimelineId([0x15; 16]));
        let timeline_dir = workdir.join(format!("tenants/{tenant}/timelines/{timeline}"));
        std::fs::create_dir_all(&timeline_dir).unwrap();
        let mut pg = PgDataset {
            tmp,
            running: false,
            timeline_dir,
            transactions,
            images: HashMap::new(),
            deltas: Vec::new(),
            last_lsn: None,
        };
        pg.init_and_start();
        let scale = scale.to_string();
        proc::run(pg.client("pgbench").args(["-i", "-q", "-s", &scale]));
        pg
    }

    fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    fn init_and_start(&mut self) {
        let data = self.data();
        proc::run(
            server_cmd("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync"])
                .args(["--wal-segsize=16", "-E", "UTF8", "--locale=C", "-D"])
                .arg(&data),
        );
        let sock = self.tmp.path().to_str().unwrap().to_string();
        // Fast and quiet, but with full page writes (they shape the WAL); WAL is kept so the
        // segments since the previous checkpoint are still there to copy.
        let opts = format!(
            "-k {sock} -p {PORT} -c listen_addresses= -c fsync=off -c synchronous_commit=off \
             -c wal_keep_size=4GB -c max_wal_size=8GB -c checkpoint_timeout=1h \
             -c autovacuum=off -c shared_buffers=64MB"
        );
        proc::run(
            server_cmd("pg_ctl")
                .args(["-w", "-s", "-o", &opts, "-l"])
                .arg(self.tmp.path().join("log"))
                .arg("-D")
                .arg(&data)
                .arg("start"),
        );
        self.running = true;
    }

    /// A client command connected to the server (pgbench or psql).
    fn client(&self, name: &str) -> Command {
        let mut c = Command::new(tool(name));
        c.arg("-h")
            .arg(self.tmp.path())
            .args(["-p", PORT, "-U", "postgres", "postgres"]);
        c
    }

    fn query(&self, sql: &str) -> String {
        let out = self.client("psql").args(["-Atc", sql]).output().unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Runs the load (skipped before the first checkpoint), then CHECKPOINT, then rewrites the
    /// timeline directory as a pageserver would see it at that checkpoint.
    pub fn checkpoint(&mut self) {
        if self.last_lsn.is_some() {
            let t = self.transactions.to_string();
            proc::run(
                self.client("pgbench")
                    .args(["-n", "-c", "2", "-j", "2", "-t", &t]),
            );
        }
        self.query("CHECKPOINT");
        let lsn = parse_lsn(&self.query("SELECT pg_current_wal_insert_lsn()"));
        self.write_images(lsn);
        self.write_deltas(lsn);
        let md = TimelineMetadata::at(Lsn(lsn));
        std::fs::write(
            self.timeline_dir.join(METADATA_FILE_NAME),
            md.to_file_bytes(),
        )
        .unwrap();
        self.last_lsn = Some(lsn);
    }

    /// One image layer per relation file under base/ changed since its last layer.
    fn write_images(&mut self, lsn: u64) {
        let base = self.data().join("base");
        for e in walkdir::WalkDir::new(&base).into_iter().flatten() {
            let md = e.metadata().unwrap();
            if !md.is_file() {
                continue;
            }
            let rel = e.path().strip_prefix(&base).unwrap().to_path_buf();
            let stamp = (md.modified().unwrap(), md.len());
            if let Some((m, l, _)) = self.images.get(&rel)
                && (*m, *l) == stamp
            {
                continue;
            }
            let flat = rel.to_str().unwrap().replace('/', "_");
            let name = format!("image_{flat}__{lsn:016X}");
            std::fs::copy(e.path(), self.timeline_dir.join(&name)).unwrap();
            if let Some((_, _, old)) = self.images.insert(rel, (stamp.0, stamp.1, name)) {
                std::fs::remove_file(self.timeline_dir.join(old)).unwrap();
            }
        }
    }

    /// The WAL bytes between the previous checkpoint's LSN and `lsn`, one delta layer per
    /// segment; the previous checkpoint's delta layers are dropped (folded into the images).
    fn write_deltas(&mut self, lsn: u64) {
        for old in self.deltas.drain(..) {
            std::fs::remove_file(self.timeline_dir.join(old)).unwrap();
        }
        let Some(mut at) = self.last_lsn else { return };
        while at < lsn {
            let seg_end = (at / WAL_SEGMENT + 1) * WAL_SEGMENT;
            let end = seg_end.min(lsn);
            let seg = format!(
                "{:08X}{:08X}{:08X}",
                1,
                at >> 32,
                (at & 0xFFFF_FFFF) / WAL_SEGMENT
            );
            let mut f = std::fs::File::open(self.data().join("pg_wal").join(&seg)).unwrap();
            f.seek(SeekFrom::Start(at % WAL_SEGMENT)).unwrap();
            let mut bytes = vec![0; (end - at) as usize];
            f.read_exact(&mut bytes).unwrap();
            let name = format!("delta_{seg}__{at:016X}-{end:016X}");
            std::fs::write(self.timeline_dir.join(&name), bytes).unwrap();
            self.deltas.push(name);
            at = end;
        }
    }

    /// Stops the server; its files stay until the dataset is dropped.
    pub fn stop(&mut self) {
        if std::mem::take(&mut self.running) {
            let _ = server_cmd("pg_ctl")
                .args(["-s", "-m", "immediate", "-D"])
                .arg(self.data())
                .arg("stop")
                .status();
        }
    }
}

impl Drop for PgDataset {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `X/Y` (hex halves) as a u64.
fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').expect("an LSN X/Y");
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}
