//! Tests of `format::manifest`.

use super::*;

pub(crate) fn sample_manifest() -> Manifest {
    let chunk = ChunkRef::whole(ChunkId::of(b"hello"), 5);
    Manifest {
        tenant: TenantId([0x11; 16]),
        timeline: TimelineId([0x22; 16]),
        lsn: Lsn(0x100),
        prev_lsn: Some(Lsn(0x80)),
        metadata: TimelineMetadata::at(Lsn(0x100)),
        added: vec![FileEntry {
            name: "layer_a".into(),
            size: 5,
            hash: FileHash(*blake3::hash(b"hello").as_bytes()),
            chunks: vec![chunk],
        }],
        removed: vec!["old_layer".into()],
        base: false,
        dropped_from: None,
    }
}

#[test]
fn manifest_round_trips() {
    let m = sample_manifest();
    assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
}

#[test]
fn escaping_names_are_rejected_even_with_a_valid_checksum() {
    for bad in [
        "../x",
        "/etc/x",
        "a/../../x",
        "a//b",
        "./x",
        "metadata",
        ".layercas-tmp",
        "a\\..\\b",
        "",
    ] {
        let mut m = sample_manifest();
        m.added[0].name = bad.into();
        let err = Manifest::decode(&m.encode()).unwrap_err();
        assert!(err.reason.contains("file"), "{bad:?}: {err}");
    }
    assert!(validate_name("sub/dir/layer-1__00AB").is_ok());
}

#[test]
fn inconsistent_sizes_and_lsns_are_rejected() {
    let mut m = sample_manifest();
    m.added[0].size = 6;
    assert!(Manifest::decode(&m.encode()).is_err());
    let mut m = sample_manifest();
    m.prev_lsn = Some(Lsn(0x100));
    assert!(Manifest::decode(&m.encode()).is_err());
}

#[test]
fn fold_applies_removals_and_replacements_in_order() {
    let m1 = sample_manifest();
    let mut m2 = sample_manifest();
    m2.lsn = Lsn(0x200);
    m2.metadata = TimelineMetadata::at(Lsn(0x200));
    m2.added[0].name = "layer_b".into();
    m2.removed = vec!["layer_a".into()];
    let s = TimelineState::fold([m1, m2]).unwrap();
    assert_eq!(s.files.keys().collect::<Vec<_>>(), vec!["layer_b"]);
    assert_eq!(s.lsn, Lsn(0x200));
}

#[test]
fn a_base_round_trips_as_version_2_and_resets_the_fold() {
    let m1 = sample_manifest();
    let state = TimelineState::fold([m1.clone()]).unwrap();
    let base = state.to_base(m1.tenant, m1.timeline);
    let bytes = base.encode();
    assert_eq!(bytes[5], BASE_VERSION);
    let back = Manifest::decode(&bytes).unwrap();
    assert!(back.base);
    assert_eq!(back, base);
    // A version-1 reader refuses it rather than folding it as a delta.
    assert!(envelope::open(Kind::Manifest, &bytes, MAX_MANIFEST_BODY).is_err());
    // Folding a delta that the base superseded, then the base, gives the base's state.
    let mut stale = sample_manifest();
    stale.lsn = Lsn(0x50);
    stale.prev_lsn = None;
    stale.metadata = TimelineMetadata::at(Lsn(0x50));
    stale.added[0].name = "gone".into();
    let folded = TimelineState::fold([stale, back]).unwrap();
    assert_eq!(folded, state);
    // Unknown flags are refused.
    let forged = envelope::seal_version(
        Kind::Manifest,
        BASE_VERSION,
        &envelope::encode_msgpack(&(&base, 3u8)),
    );
    assert!(Manifest::decode(&forged).is_err());
}

#[test]
fn a_base_records_the_checkpoints_gc_dropped_below_it() {
    let m1 = sample_manifest();
    let mut base = TimelineState::fold([m1.clone()])
        .unwrap()
        .to_base(m1.tenant, m1.timeline);
    let plain = base.encode();
    base.dropped_from = Some(Lsn(0x20));
    let bytes = base.encode();
    assert!(bytes.len() > plain.len(), "one more array element");
    let back = Manifest::decode(&bytes).unwrap();
    assert_eq!(back.dropped_from, Some(Lsn(0x20)));
    assert!(back.drops(Lsn(0x20)) && back.drops(Lsn(0xff)));
    assert!(!back.drops(Lsn(0x1f)) && !back.drops(Lsn(0x100)));
    assert_eq!(Manifest::decode(&plain).unwrap().dropped_from, None);
    // A range above the base's own LSN is refused.
    base.dropped_from = Some(Lsn(0x101));
    assert!(Manifest::decode(&base.encode()).is_err());
}
