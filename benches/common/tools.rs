//! The three tools compared, driven as a user would drive them from a shell, each on the whole
//! workdir: `casctl sync --workdir` / `casctl sync --download --workdir` (the pageserver's front
//! door: every timeline in one process, layer files trusted to keep their bytes under their
//! names), `borg create --compression zstd,3` / `borg extract`, and `restic backup` /
//! `restic restore` (repository version 2, compression auto). `LAYERCAS_PEERS_PER_TIMELINE=1`
//! drives casctl one `checkpoint --immutable-names` and one `restore` per timeline instead, and
//! `LAYERCAS_PEERS_IMMUTABLE=0` does so without `--immutable-names` (every file read). Each tool
//! gets its own repository, cache and config under one scratch directory.
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
    /// casctl only: how it is driven.
    casctl_mode: CasctlMode,
}

/// How casctl records and restores the workdir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CasctlMode {
    /// `sync` over the whole workdir, as borg and restic take it whole.
    Workdir,
    /// One `checkpoint` and one `restore` process per timeline; `immutable`: with
    /// `--immutable-names` (a layer file keeps its bytes under its name, as the datasets' layers
    /// do; without it every file is read, as borg and restic would without their files caches).
    PerTimeline { immutable: bool },
}

impl CasctlMode {
    /// From `LAYERCAS_PEERS_PER_TIMELINE` and `LAYERCAS_PEERS_IMMUTABLE` (see the module doc).
    fn from_env() -> CasctlMode {
        let set = |name: &str, default: bool| std::env::var(name).map_or(default, |v| v != "0");
        let immutable = set("LAYERCAS_PEERS_IMMUTABLE", true);
        if set("LAYERCAS_PEERS_PER_TIMELINE", false) || !immutable {
            CasctlMode::PerTimeline { immutable }
        } else {
            CasctlMode::Workdir
        }
    }
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
            casctl_mode: CasctlMode::from_env(),
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

    /// Records the workdir's current state as the next checkpoint (borg and restic: one archive
    /// or snapshot of the whole workdir; casctl: see [`CasctlMode`]).
    pub fn ingest(&mut self, workdir: &Path, tls: &[Timeline]) -> Cost {
        self.archives += 1;
        match (self.kind, self.casctl_mode) {
            (Kind::Casctl, CasctlMode::Workdir) => {
                proc::run(self.cmd("sync").arg("--workdir").arg(workdir))
            }
            (Kind::Casctl, CasctlMode::PerTimeline { immutable }) => {
                tls.iter().fold(Cost::default(), |acc, t| {
                    let mut c = self.cmd("checkpoint");
                    if immutable {
                        c.arg("--immutable-names");
                    }
                    if std::env::var_os("LAYERCAS_PEERS_NO_DELTAS").is_some() {
                        c.arg("--no-deltas");
                    }
                    c.args(["--tenant", &t.tenant.to_hex(), "--timeline"])
                        .arg(t.timeline.to_hex())
                        .arg(workdir.join(&t.rel));
                    acc.then(proc::run(&mut c))
                })
            }
            (Kind::Borg, _) => {
                let mut repo = self.repo.as_os_str().to_owned();
                repo.push(format!("::ck{}", self.archives));
                let mut c = self.cmd("create");
                c.args(["--compression", "zstd,3"])
                    .arg(repo)
                    .arg("tenants")
                    .current_dir(workdir);
                proc::run(&mut c)
            }
            (Kind::Restic, _) => {
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
        let cost = match (self.kind, self.casctl_mode) {
            (Kind::Casctl, CasctlMode::Workdir) => {
                proc::run(self.cmd("sync").arg("--download").arg("--workdir").arg(to))
            }
            (Kind::Casctl, CasctlMode::PerTimeline { .. }) => {
                tls.iter().fold(Cost::default(), |acc, t| {
                    let mut c = self.cmd("restore");
                    c.args(["--tenant", &t.tenant.to_hex(), "--timeline"])
                        .arg(t.timeline.to_hex())
                        .arg("--to")
                        .arg(to.join(&t.rel));
                    acc.then(proc::run(&mut c))
                })
            }
            (Kind::Borg, _) => {
                let mut repo = self.repo.as_os_str().to_owned();
                repo.push(format!("::ck{}", self.archives));
                proc::run(self.cmd("extract").arg(repo).current_dir(to))
            }
            (Kind::Restic, _) => {
                proc::run(self.cmd("restore").args(["latest", "--target"]).arg(to))
            }
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
