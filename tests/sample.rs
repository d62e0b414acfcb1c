//! Tests of the sample workdir generator: determinism, layout, branch sharing, the share of
//! pages a checkpoint changes, the WAL chain's shared prefix, compaction, and the size mix.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use layercas::format::metadata::{
    MetadataFormat, PageserverVersion, TimelineMetadata, parse_pageserver,
};
use layercas::id::{TenantId, TimelineId};
use layercas::testkit::sample::{
    self, CheckpointDelta, LayerName, PAGE_SIZE, SampleMetadata, SampleSpec, SampleTimeline,
    SampleWorkdir,
};

fn keys(layer: &LayerName) -> std::ops::Range<[u8; sample::KEY_LEN]> {
    match layer {
        LayerName::Image { keys, .. } | LayerName::Delta { keys, .. } => keys.clone(),
    }
}

/// Every file under `root` (relative path) with the blake3 of its bytes.
fn hash_tree(root: &Path) -> BTreeMap<PathBuf, blake3::Hash> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, blake3::hash(&fs::read(&path).unwrap()));
            }
        }
    }
    out
}

fn spec(seed: u64, tenants: usize, timelines: usize, bytes: u64) -> SampleSpec {
    SampleSpec {
        seed,
        tenants,
        timelines_per_tenant: timelines,
        bytes_per_timeline: bytes,
    }
}

/// Creates `spec` and runs `steps` checkpoints; returns the workdir and all deltas.
fn run(root: &Path, spec: &SampleSpec, steps: usize) -> (SampleWorkdir, Vec<Vec<CheckpointDelta>>) {
    let (mut wd, first) = SampleWorkdir::create(root, spec).unwrap();
    let mut all = vec![first];
    for _ in 0..steps {
        all.push(wd.step().unwrap());
    }
    (wd, all)
}

/// The 8 KiB pages of an image layer file.
fn pages(path: &Path) -> Vec<[u8; PAGE_SIZE]> {
    let bytes = fs::read(path).unwrap();
    let pages = sample::image_layer_pages(&bytes).expect("an image layer");
    pages
        .chunks_exact(PAGE_SIZE)
        .map(|p| p.try_into().unwrap())
        .collect()
}

fn image_names(t: &SampleTimeline) -> Vec<(&String, LayerName)> {
    let parsed = t.layers().iter().map(|n| (n, LayerName::parse(n).unwrap()));
    parsed
        .filter(|(_, l)| matches!(l, LayerName::Image { .. }))
        .collect()
}

/// The same spec gives byte-identical files and identical deltas after several checkpoints; a
/// different seed gives different files.
#[test]
fn same_seed_gives_identical_workdirs() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (_, a) = run(dirs[0].path(), &SampleSpec::small(), 3);
    let (_, b) = run(dirs[1].path(), &SampleSpec::small(), 3);
    assert_eq!(a, b);
    let tree = hash_tree(dirs[0].path());
    assert!(tree.len() > 40, "{} files", tree.len());
    assert_eq!(tree, hash_tree(dirs[1].path()));
    let other = SampleSpec {
        seed: 99,
        ..SampleSpec::small()
    };
    run(dirs[2].path(), &other, 3);
    assert_ne!(tree, hash_tree(dirs[2].path()));
}

/// The tree is `tenants/<id>/timelines/<id>/`, each with a parsable `metadata` equal to the
/// reported one and layer files with Neon-style names, exactly the ones reported; no temp files.
#[test]
fn layout_is_a_pageserver_workdir() {
    let dir = tempfile::tempdir().unwrap();
    let (wd, deltas) = run(dir.path(), &SampleSpec::small(), 2);
    assert_eq!(wd.timelines().len(), 4);
    assert_eq!(wd.checkpoint(), 2);
    for (t, d) in wd.timelines().iter().zip(&deltas[2]) {
        let rel = t.dir().strip_prefix(dir.path()).unwrap();
        let parts: Vec<_> = rel.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(parts[0], "tenants");
        assert_eq!(parts[1].parse::<TenantId>().unwrap(), t.tenant());
        assert_eq!(parts[3].parse::<TimelineId>().unwrap(), t.timeline());
        let md = MetadataFormat::Pageserver.parse(&fs::read(t.dir().join("metadata")).unwrap());
        assert_eq!(&md.unwrap(), t.metadata());
        assert_eq!(&d.metadata, t.metadata());
        let mut on_disk: HashSet<String> = fs::read_dir(t.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(on_disk.remove("metadata"));
        assert_eq!(on_disk, t.layers().iter().cloned().collect());
        for name in t.layers() {
            let parsed = LayerName::parse(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(&parsed.to_string(), name);
        }
    }
}

/// `metadata` files are the pageserver's own by default (version 4 for a tenant's first timeline,
/// version 1 for the others, 512 bytes each); asked for, they are layercas's envelope instead,
/// with the same fields and the same layer files.
#[test]
fn metadata_is_in_the_pageserver_format_unless_layercas_is_asked_for() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut ps, _) = SampleWorkdir::create(dirs[0].path(), &SampleSpec::small()).unwrap();
    let layercas = SampleMetadata::Layercas;
    let (mut lc, _) =
        SampleWorkdir::create_with(dirs[1].path(), &SampleSpec::small(), layercas).unwrap();
    let (a, b) = (ps.step().unwrap(), lc.step().unwrap());
    for (i, (p, l)) in ps.timelines().iter().zip(lc.timelines()).enumerate() {
        let file = fs::read(p.dir().join("metadata")).unwrap();
        assert_eq!(file.len(), 512);
        let (fields, version) = parse_pageserver(&file).unwrap();
        let want = match i % 2 {
            0 => PageserverVersion::V4 { pg_version: 16 },
            _ => PageserverVersion::V1,
        };
        assert_eq!(version, want, "timeline {i}");
        assert_eq!(p.metadata().file.as_deref(), Some(&file[..]));
        assert_eq!(a[i].metadata, *p.metadata());

        let file = fs::read(l.dir().join("metadata")).unwrap();
        let md = TimelineMetadata::from_file_bytes(&file).unwrap();
        assert_eq!((&md, l.metadata().file.as_ref()), (l.metadata(), None));
        assert_eq!(
            md,
            TimelineMetadata {
                file: None,
                ..fields
            }
        );
        assert_eq!(b[i].metadata, md);
        assert_eq!(l.layers(), p.layers());
    }
}

/// Timeline 1 of each tenant is a branch of timeline 0 at its checkpoint-0 LSN, and at least 90%
/// of the pages of its image layers over the parent's key ranges are byte-identical to the
/// parent's.
#[test]
fn branch_shares_most_pages_with_parent() {
    let dir = tempfile::tempdir().unwrap();
    let (wd, _) = SampleWorkdir::create(dir.path(), &SampleSpec::small()).unwrap();
    for pair in wd.timelines().chunks(2) {
        let (parent, branch) = (&pair[0], &pair[1]);
        assert_eq!(parent.metadata().ancestor_timeline, None);
        assert_eq!(branch.metadata().ancestor_timeline, Some(parent.timeline()));
        assert_eq!(
            branch.metadata().ancestor_lsn,
            parent.metadata().disk_consistent_lsn
        );
        assert!(branch.metadata().disk_consistent_lsn > branch.metadata().ancestor_lsn);
        let parent_keys: HashSet<_> = image_names(parent)
            .into_iter()
            .map(|(_, l)| keys(&l))
            .collect();
        let images = |t: &SampleTimeline| -> Vec<[u8; PAGE_SIZE]> {
            let names = image_names(t).into_iter();
            let names = names.filter(|(_, l)| parent_keys.contains(&keys(l)));
            names.flat_map(|(n, _)| pages(&t.dir().join(n))).collect()
        };
        let parent_pages: HashSet<_> = images(parent).into_iter().collect();
        let branch_pages = images(branch);
        assert!(branch_pages.len() > 100);
        let shared = branch_pages
            .iter()
            .filter(|p| parent_pages.contains(*p))
            .count();
        let share = shared as f64 / branch_pages.len() as f64;
        assert!(
            (0.9..1.0).contains(&share),
            "branch shares {share:.3} of its pages"
        );
    }
}

/// A checkpoint rewrites about 2% of the pages of each large image layer, in place: comparing
/// the two versions of a key range page by page, the page count is equal and 1.5-3% differ.
#[test]
fn step_changes_about_two_percent_of_large_image_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (wd, _) = run(dir.path(), &spec(7, 1, 1, 8 << 20), 1);
    let t = &wd.timelines()[0];
    let mut versions: HashMap<_, Vec<&String>> = HashMap::new();
    for (name, layer) in image_names(t) {
        if let LayerName::Image { keys, .. } = layer {
            versions.entry(keys).or_default().push(name);
        }
    }
    let (mut total, mut changed, mut large) = (0, 0, 0);
    for names in versions.values().filter(|v| v.len() == 2) {
        let (old, new) = (
            pages(&t.dir().join(names[0])),
            pages(&t.dir().join(names[1])),
        );
        assert_eq!(old.len(), new.len());
        if old.len() >= 100 {
            large += 1;
            total += old.len();
            changed += old.iter().zip(&new).filter(|(a, b)| a != b).count();
        }
    }
    assert!(large >= 2, "{large} large image layers");
    let share = changed as f64 / total as f64;
    assert!(
        (0.015..=0.03).contains(&share),
        "{changed} of {total} pages changed"
    );
}

/// Each checkpoint's delta matches the directory: the LSN and metadata advance, added files exist,
/// removed ones are gone; the WAL-like delta's new version has the previous one as a prefix; over
/// several checkpoints old versions and compacted small deltas are removed.
#[test]
fn steps_report_changes_and_grow_the_wal_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wd, _) = SampleWorkdir::create(dir.path(), &spec(3, 1, 1, 2 << 20)).unwrap();
    let (mut prefixes, mut compacted) = (0, 0);
    for _ in 0..8 {
        let before = wd.timelines()[0].metadata().clone();
        let delta = wd.step().unwrap().remove(0);
        let t = &wd.timelines()[0];
        assert!(delta.lsn > before.disk_consistent_lsn);
        let md = &delta.metadata;
        assert_eq!(md.disk_consistent_lsn, delta.lsn);
        assert!(md.prev_record_lsn.unwrap() < delta.lsn);
        assert!(md.latest_gc_cutoff_lsn >= before.latest_gc_cutoff_lsn);
        assert!(md.latest_gc_cutoff_lsn < delta.lsn);
        assert!(delta.added.iter().all(|n| t.dir().join(n).is_file()));
        assert!(delta.removed.iter().all(|n| !t.dir().join(n).exists()));
        prefixes += count_prefix_versions(t, &delta);
        compacted += (delta.removed.len() > 6) as usize;
    }
    assert!(prefixes >= 6, "{prefixes} delta layers extend an older one");
    assert!(compacted >= 1, "no compaction in 8 checkpoints");
}

/// Added delta layers whose bytes start with the whole of another delta of the same key range and
/// start LSN still on disk.
fn count_prefix_versions(t: &SampleTimeline, delta: &CheckpointDelta) -> usize {
    let mut count = 0;
    for added in &delta.added {
        let Some(LayerName::Delta { keys, lsns }) = LayerName::parse(added) else {
            continue;
        };
        let new = fs::read(t.dir().join(added)).unwrap();
        for other in t.layers() {
            if let Some(LayerName::Delta { keys: k, lsns: l }) = LayerName::parse(other)
                && k == keys
                && l.start == lsns.start
                && l.end < lsns.end
            {
                let old = fs::read(t.dir().join(other)).unwrap();
                assert!(new.starts_with(&old), "{added} does not extend {other}");
                count += 1;
            }
        }
    }
    count
}

/// Like Neon's fleet, scaled down: most layer files are small (median under 128 KiB, most under
/// 200 KiB), a few are large (1 MiB and more, the largest over 2 MiB at 8 MiB per timeline).
#[test]
fn file_sizes_are_mostly_small_and_a_few_large() {
    let dir = tempfile::tempdir().unwrap();
    let (wd, _) = run(dir.path(), &spec(11, 2, 2, 8 << 20), 2);
    let mut sizes: Vec<u64> = wd
        .timelines()
        .iter()
        .flat_map(|t| {
            t.layers()
                .iter()
                .map(|n| fs::metadata(t.dir().join(n)).unwrap().len())
        })
        .collect();
    sizes.sort();
    let median = sizes[sizes.len() / 2];
    let small = sizes.iter().filter(|&&s| s <= 200 << 10).count();
    let large = sizes.iter().filter(|&&s| s >= 1 << 20).count();
    assert!(median < 128 << 10, "median {median}");
    assert!(small * 2 > sizes.len(), "{small} of {} small", sizes.len());
    assert!((4..sizes.len() / 4).contains(&large), "{large} large");
    assert!(*sizes.last().unwrap() >= 2 << 20);
}

/// Bad specs and a non-empty `tenants` directory are refused with an error, not a panic.
#[test]
fn create_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        spec(1, 0, 1, 1 << 20),
        spec(1, 1, 0, 1 << 20),
        spec(1, 1, 1, 1000),
    ] {
        let err = SampleWorkdir::create(dir.path(), &bad).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
    SampleWorkdir::create(dir.path(), &spec(1, 1, 1, 256 << 10)).unwrap();
    let err = SampleWorkdir::create(dir.path(), &spec(1, 1, 1, 256 << 10)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
}
