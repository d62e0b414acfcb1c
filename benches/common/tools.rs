//! The three tools compared, driven as a user would drive them from a shell: `casctl checkpoint`
//! and `casctl restore` per timeline, `borg create --compression zstd,3` / `borg extract`, and
//! `restic backup` / `restic restore` (repository version 2, compression auto); casctl with
//! `--immutable-names` unless `LAYERCAS_PEERS_IMMUTABLE=0`. Each tool gets
//! its own repository, cache and config under one scratch directory.
//!
//! Owns the command lines and where each tool keeps its state; timing is `proc`'s business.

use std::path::{Path, PathBuf};
use std::process::Command;

use layercas::id::{TenantId, TimelineId};

use super::proc::{self, Cost};

/// One timeline of the workdir: ids and its directory under the workdir root.
#[derive(Clone, Debug)]
pub struct Timeline {
    pub tenant: TenantId,
    pub timeline: TimelineId,
    /// Relative to the workdir root: tenants/<t>/timelines/<tl>.
    pub rel: PathBuf,
}

/// The timelines under `workdir/tenants/*/timelines/*`, sorted.
pub fn timelines(workdir: &Path) -> Vec<Timeline> {
    let mut out = Vec::new();
    let dirs = |p: PathBuf| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    };
    for t in dirs(workdir.join("tenants")) {
        for tl in dirs(t.join("timelines")) {
            let id = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
            out.push(Timeline {
                tenant: id(&t).parse().expect("tenant directory named by its id"),
                timeline: id(&tl).parse().expect("timeline directory named by its id"),
                rel: tl.strip_prefix(workdir).unwrap().to_path_buf(),
            });
        }
    }
    out
}

/// Which tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Casctl,
    Borg,
    Restic,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Casctl => "casctl",
            Kind::Borg => "borg",
            Kind::Restic => "restic",
        }
    }
}

/// A tool with its repository for one dataset.
pub struct Tool {
    pub kind: Kind,
    casctl: PathBuf,
    /// The store or repository.
    repo: PathBuf,
    /// Caches, config and keys of borg and restic.
    home: PathBuf,
    archives: usize,
    /// casctl only: `checkpoint --immutable-names` (a layer file keeps its bytes under its name,
    /// as the pgbench and sample datasets' layers do), from `LAYERCAS_PEERS_IMMUTABLE` (default
    /// 1; 0 reads every file, as borg and restic would without their files caches).
    immutable: bool,
}

impl Tool {
    /// Creates the repository under `scratch/<tool>`.
    pub fn new(kind: Kind, casctl: &Path, scratch: &Path) -> Tool {
        let dir = scratch.join(kind.name());
        let tool = Tool {
            kind,
            casctl: casctl.to_path_buf(),
            repo: dir.join("repo"),
            home: dir.join("home"),
            archives: 0,
            immutable: std::env::var("LAYERCAS_PEERS_IMMUTABLE").map_or(true, |v| v != "0"),
        };
        std::fs::create_dir_all(&tool.home).unwrap();
        match kind {
            Kind::Casctl => {
                proc::run(&mut tool.cmd("init"));
            }
            Kind::Borg => {
                proc::run(tool.cmd("init").args(["-e", "none"]).arg(&tool.repo));
            }
            Kind::Restic => {
                proc::run(tool.cmd("init").args(["--repository-version", "2"]));
            }
        }
        tool
    }

    /// The tool's command with its repository and private state set.
    fn cmd(&self, sub: &str) -> Command {
        let mut c;
        match self.kind {
            Kind::Casctl => {
                c = Command::new(&self.casctl);
                c.arg("--store").arg(&self.repo).arg(sub);
            }
            Kind::Borg => {
                c = Command::new("borg");
                c.arg(sub)
                    .env("BORG_BASE_DIR", &self.home)
                    .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
                    .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes");
            }
            Kind::Restic => {
                c = Command::new("restic");
                c.arg("-r")
                    .arg(&self.repo)
                    .args(["--cache-dir"])
                    .arg(self.home.join("cache"))
                    .arg(sub)
                    .env("RESTIC_PASSWORD", "layercas-bench")
                    .env("HOME", &self.home);
            }
        }
        c
    }

    /// Records the workdir's current state as the next checkpoint (casctl: one `checkpoint` per
    /// timeline; borg and restic: one archive or snapshot of the whole workdir).
    pub fn ingest(&mut self, workdir: &Path, tls: &[Timeline]) -> Cost {
        self.archives += 1;
        match self.kind {
            Kind::Casctl => tls.iter().fold(Cost::default(), |acc, t| {
                let mut c = self.cmd("checkpoint");
                if self.immutable {
                    c.arg("--immutable-names");
                }
                c.args(["--tenant", &t.tenant.to_hex(), "--timeline"])
                    .arg(t.timeline.to_hex())
                    .arg(workdir.join(&t.rel));
                acc.then(proc::run(&mut c))
            }),
            Kind::Borg => {
                let mut repo = self.repo.as_os_str().to_owned();
                repo.push(format!("::ck{}", self.archives));
                let mut c = self.cmd("create");
                c.args(["--compression", "zstd,3"])
                    .arg(repo)
                    .arg("tenants")
                    .current_dir(workdir);
                proc::run(&mut c)
            }
            Kind::Restic => {
                let mut c = self.cmd("backup");
                c.args(["-q", "--host", "bench", "--compression", "auto", "tenants"])
                    .current_dir(workdir);
                proc::run(&mut c)
            }
        }
    }

    /// Restores the newest checkpoint into the empty directory `to`, then `sync`: the time to a
    /// durable copy.
    pub fn restore(&self, to: &Path, tls: &[Timeline]) -> Cost {
        std::fs::create_dir_all(to).unwrap();
        let cost = match self.kind {
            Kind::Casctl => tls.iter().fold(Cost::default(), |acc, t| {
                let mut c = self.cmd("restore");
                c.args(["--tenant", &t.tenant.to_hex(), "--timeline"])
                    .arg(t.timeline.to_hex())
                    .arg("--to")
                    .arg(to.join(&t.rel));
                acc.then(proc::run(&mut c))
            }),
            Kind::Borg => {
                let mut repo = self.repo.as_os_str().to_owned();
                repo.push(format!("::ck{}", self.archives));
                proc::run(self.cmd("extract").arg(repo).current_dir(to))
            }
            Kind::Restic => proc::run(self.cmd("restore").args(["latest", "--target"]).arg(to)),
        };
        cost.then(proc::sync())
    }

    /// Bytes of the repository on disk (data only, as `du -sb` counts it).
    pub fn stored_bytes(&self) -> u64 {
        proc::tree_bytes(&self.repo, None).0
    }

    /// The tool's version line.
    pub fn version(&self) -> String {
        match self.kind {
            Kind::Casctl => proc::first_line(self.casctl.to_str().unwrap(), &["--version"]),
            Kind::Borg => proc::first_line("borg", &["--version"]),
            Kind::Restic => proc::first_line("restic", &["version"]),
        }
    }
}
