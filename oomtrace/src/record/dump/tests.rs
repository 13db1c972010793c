use serde_json::json;

use super::*;
use crate::scratch::ScratchDir;

fn header() -> Value {
    json!({"format": 2, "version": "t", "clock": {"realtime_offset_ns": 5}})
}

/// Where the first record after the header starts.
fn first_record() -> usize {
    12 + 8 + 1 + header().to_string().len()
}

fn sample(compress: bool) -> Vec<u8> {
    let scratch = ScratchDir::new("dump");
    let dir = scratch.join("sample.dump");
    let mut w = Writer::create(&dir, compress, &header()).unwrap();
    for i in 0..50u8 {
        w.event(&[i; 60]).unwrap();
    }
    w.lost(3).unwrap();
    w.summary(&json!({"kills": 1})).unwrap();
    w.finish(99).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dir).unwrap().permissions())
            & 0o777;
    assert_eq!(mode, 0o600, "dumps name processes: owner-only");
    std::fs::read(&dir).unwrap()
}

fn read_all(r: &mut Reader) -> Vec<Record> {
    std::iter::from_fn(|| r.next_record()).collect()
}

#[test]
fn round_trip_plain_and_gzip() {
    let scratch = ScratchDir::new("dump-gz");
    let path = scratch.join("sample.dump.gz");
    std::fs::write(&path, sample(true)).unwrap();
    let readers = [
        Reader::from_bytes(sample(false)),
        Reader::from_bytes(sample(true)),
        Reader::open(&path).unwrap(),
    ];
    for (i, mut r) in readers.into_iter().enumerate() {
        assert_eq!(r.header(), Some(&header()), "reader {i}");
        let recs = read_all(&mut r);
        assert_eq!(recs.len(), 50 + 3, "reader {i}");
        assert_eq!(recs[0], Record::Event(vec![0; 60]));
        assert_eq!(recs[50], Record::Lost(3));
        assert_eq!(recs[52], Record::End(99));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(r.clean_end);
    }
}

#[test]
fn a_cut_dump_reads_up_to_its_last_complete_record() {
    let full = sample(false);
    // Cut inside the 11th event record.
    let cut = first_record() + 10 * (8 + 61) + 20;
    let mut r = Reader::from_bytes(full[..cut].to_vec());
    let recs = read_all(&mut r);
    assert_eq!(recs.len(), 10);
    assert!(
        matches!(&r.problems[..], [DumpProblem::Truncated { .. }]),
        "{:?}",
        r.problems
    );
    assert!(!r.clean_end);
}

#[test]
fn a_corrupted_record_is_skipped_and_located() {
    let mut bytes = sample(false);
    let third_event = first_record() + 2 * (8 + 61);
    bytes[third_event + 30] ^= 0xff;
    let mut r = Reader::from_bytes(bytes);
    let recs = read_all(&mut r);
    assert_eq!(recs.len(), 49 + 3);
    assert_eq!(
        r.problems,
        [DumpProblem::Corrupt {
            offset: third_event as u64,
            what: "checksum mismatch in a 61-byte record (skipped)".into()
        }]
    );
}

#[test]
fn not_a_dump() {
    let mut r = Reader::from_bytes(b"hello world, not a dump".to_vec());
    assert!(r.next_record().is_none());
    assert_eq!(r.problems, [DumpProblem::BadMagic]);
    let mut future = sample(false);
    future[8] = 9;
    let mut r = Reader::from_bytes(future);
    assert!(r.next_record().is_none());
    assert_eq!(r.problems, [DumpProblem::Version(9)]);
}

/// Random cuts and corruptions: never a panic, always a located problem or a clean read.
#[test]
fn random_cuts_and_corruptions_never_panic() {
    let full = sample(false);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let mut bytes = full.clone();
        match next() % 3 {
            0 => bytes.truncate((next() as usize) % full.len()),
            1 => {
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] = next() as u8;
                }
            }
            _ => {
                let i = (next() as usize) % bytes.len();
                bytes.truncate(i);
                bytes.extend((0..next() % 64).map(|_| next() as u8));
            }
        }
        let mut r = Reader::from_bytes(bytes.clone());
        let recs = read_all(&mut r);
        assert!(recs.len() <= 53);
        if bytes != full {
            let intact = r.problems.is_empty() && r.clean_end && recs.len() == 53;
            assert!(
                !intact || bytes.len() >= full.len(),
                "damage went unnoticed"
            );
        }
        for p in &r.problems {
            if let DumpProblem::Truncated { offset, .. } | DumpProblem::Corrupt { offset, .. } = p {
                assert!(*offset <= bytes.len() as u64);
            }
        }
    }
}

/// One flipped bit anywhere in the deflate data of a gzip dump: the gzip damage is named
/// with its byte in the compressed file, and every record before it is read.
#[test]
fn gzip_damage_is_located_and_the_records_before_it_are_kept() {
    let scratch = ScratchDir::new("dump-gzbit");
    let path = scratch.join("big.dump.gz");
    let mut w = Writer::create(&path, true, &header()).unwrap();
    // Varied, poorly compressible events, so that damage lands mid-stream.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..3000u32 {
        let mut ev = i.to_le_bytes().to_vec();
        ev.extend((0..40).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }));
        w.event(&ev).unwrap();
    }
    w.finish(7).unwrap();
    let gz = std::fs::read(&path).unwrap();
    for frac in [4, 2] {
        let at = gz.len() * (frac - 1) / frac;
        let mut bad = gz.clone();
        bad[at] ^= 0x10;
        let mut r = Reader::from_bytes(bad);
        assert_eq!(r.header(), Some(&header()));
        let recs = read_all(&mut r);
        let gzip: Vec<_> = r
            .problems
            .iter()
            .filter_map(|p| match p {
                DumpProblem::Gzip { offset, .. } => Some(*offset),
                _ => None,
            })
            .collect();
        assert_eq!(gzip.len(), 1, "{:?}", r.problems);
        assert!(
            gzip[0] as usize >= at && gzip[0] as usize <= gz.len(),
            "damage at {at} reported at {}",
            gzip[0]
        );
        assert!(
            r.problems[0]
                .to_string()
                .starts_with("gzip stream corrupt at byte")
                || r.problems
                    .iter()
                    .any(|p| p.to_string().starts_with("gzip stream corrupt at byte"))
        );
        // Records come out in order and intact up to the damage: the events before it are
        // numbered 0, 1, 2, ... and about as many as the compressed bytes before it hold.
        let events: Vec<u32> = recs
            .iter()
            .filter_map(|r| match r {
                Record::Event(e) => Some(u32::from_le_bytes(e[..4].try_into().unwrap())),
                _ => None,
            })
            .collect();
        let intact = events
            .iter()
            .enumerate()
            .take_while(|(i, n)| *i as u32 == **n)
            .count();
        let expected = 3000 * (frac - 1) / frac;
        assert!(
            intact + 100 >= expected,
            "flip at {at}/{}: {intact} events intact, ~{expected} expected",
            gz.len()
        );
    }
    // The same damage through a file, as `oomtrace report` reads it.
    let mut bad = gz.clone();
    bad[gz.len() / 2] ^= 0x10;
    std::fs::write(&path, &bad).unwrap();
    let mut r = Reader::open(&path).unwrap();
    assert!(read_all(&mut r).len() > 1000);
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, DumpProblem::Gzip { .. }))
    );
}

#[test]
fn a_gzip_dump_cut_short_is_a_truncation_and_members_may_be_concatenated() {
    let gz = sample(true);
    let mut r = Reader::from_bytes(gz[..gz.len() - 20].to_vec());
    let recs = read_all(&mut r);
    assert!(recs.len() >= 40, "{}", recs.len());
    assert!(
        matches!(&r.problems[..], [DumpProblem::Truncated { what, .. }] if what.contains("gzip")),
        "{:?}",
        r.problems
    );
    // `cat a.gz b.gz` is one gzip stream of both: the second dump's bytes follow the end
    // record, so they are reported as records out of place, not as gzip damage.
    let mut two = gz.clone();
    two.extend(&gz);
    let mut r = Reader::from_bytes(two);
    assert!(read_all(&mut r).len() >= 53);
    assert!(
        r.problems
            .iter()
            .all(|p| !matches!(p, DumpProblem::Gzip { .. })),
        "{:?}",
        r.problems
    );
    // Garbage after the last member is damage of the gzip layer.
    let mut tail = gz.clone();
    tail.extend(b"junk");
    let mut r = Reader::from_bytes(tail);
    assert_eq!(read_all(&mut r).len(), 53);
    assert!(
        matches!(&r.problems[..], [DumpProblem::Gzip { offset, .. }] if *offset == gz.len() as u64),
        "{:?}",
        r.problems
    );
}

/// The header is recognized strictly: a damaged or incomplete one is a problem, and the
/// record after it is read as what it is, not taken for the header.
#[test]
fn a_damaged_header_is_a_problem_and_the_next_record_stays_itself() {
    let intact = sample(false);
    let header_at = 12u64;
    for flip in [4, 8, 8 + 10] {
        let mut bytes = intact.clone();
        bytes[12 + flip] ^= 0x01;
        let mut r = Reader::from_bytes(bytes);
        assert_eq!(r.header(), None);
        assert!(
            matches!(&r.problems[..], [DumpProblem::Header { offset, .. }] if *offset == header_at),
            "flip at {flip}: {:?}",
            r.problems
        );
        let recs = read_all(&mut r);
        assert_eq!(recs.len(), 53, "flip at {flip}");
        assert_eq!(recs[0], Record::Event(vec![0; 60]));
    }
    // Intact records, but not a header of ours.
    let scratch = ScratchDir::new("dump-hdr");
    for (i, h) in [
        json!({"format": 2}),
        json!([1, 2]),
        json!({"version": "t", "clock": {}}),
    ]
    .iter()
    .enumerate()
    {
        let path = scratch.join(&format!("h{i}.dump"));
        let mut w = Writer::create(&path, false, h).unwrap();
        w.event(&[1; 60]).unwrap();
        w.finish(1).unwrap();
        let mut r = Reader::open(&path).unwrap();
        assert_eq!(r.header(), None);
        assert!(
            matches!(&r.problems[..], [DumpProblem::Header { .. }]),
            "{:?}",
            r.problems
        );
        assert_eq!(
            read_all(&mut r),
            [Record::Event(vec![1; 60]), Record::End(1)]
        );
    }
    // No header at all: the first record is an event, kept as one.
    let mut bytes = intact[..12].to_vec();
    bytes.extend(&intact[first_record()..]);
    let mut r = Reader::from_bytes(bytes);
    assert_eq!(r.header(), None);
    let what = match &r.problems[..] {
        [DumpProblem::Header { what, .. }] => what.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        what.contains("is an event record, not the header"),
        "{what}"
    );
    assert_eq!(read_all(&mut r).len(), 53);
}

#[test]
fn memcg_records_are_bounded() {
    let scratch = ScratchDir::new("dump-memcg");
    let path = scratch.join("memcg.dump");
    let mut w = Writer::create(&path, false, &header()).unwrap();
    w.memcg(1, &"a".repeat(MAX_MEMCG_PATH + 1)).unwrap();
    w.memcg(2, &"b".repeat(MAX_MEMCG_PATH)).unwrap();
    w.record(T_MEMCG, &[1, 2, 3]).unwrap();
    for id in 0..MAX_MEMCG_RECORDS + 10 {
        w.memcg(10 + id, "/m").unwrap();
    }
    w.finish(1).unwrap();
    let mut r = Reader::open(&path).unwrap();
    let recs = read_all(&mut r);
    let memcgs = recs
        .iter()
        .filter(|r| matches!(r, Record::Memcg(..)))
        .count() as u64;
    assert_eq!(memcgs, MAX_MEMCG_RECORDS);
    assert!(recs.contains(&Record::Memcg(2, "b".repeat(MAX_MEMCG_PATH))));
    let problems: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].contains("memcg record with a path of 4097 bytes"),
        "{problems:?}"
    );
    assert!(problems[1].contains("has no 8-byte id"), "{problems:?}");
    assert!(
        problems[2].contains("later memcg records are dropped"),
        "{problems:?}"
    );

    // The bytes of paths kept are bounded too.
    let path = scratch.join("memcg-bytes.dump");
    let mut w = Writer::create(&path, false, &header()).unwrap();
    let n = MAX_MEMCG_BYTES / MAX_MEMCG_PATH as u64 + 5;
    for id in 0..n {
        w.memcg(id, &"p".repeat(MAX_MEMCG_PATH)).unwrap();
    }
    w.finish(1).unwrap();
    let mut r = Reader::open(&path).unwrap();
    let kept = read_all(&mut r).len() as u64 - 1;
    assert_eq!(kept, MAX_MEMCG_BYTES / MAX_MEMCG_PATH as u64);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
}

#[test]
fn fixed_size_records_of_the_wrong_size_are_reported() {
    let scratch = ScratchDir::new("dump-size");
    let path = scratch.join("size.dump");
    let mut w = Writer::create(&path, false, &header()).unwrap();
    w.record(T_LOST, &[1, 2, 3]).unwrap();
    w.record(T_END, &[0; 9]).unwrap();
    w.record(T_SUMMARY, &vec![b' '; MAX_JSON_RECORD + 1])
        .unwrap();
    w.record(T_HEADER, header().to_string().as_bytes()).unwrap();
    w.finish(3).unwrap();
    let mut r = Reader::open(&path).unwrap();
    assert_eq!(read_all(&mut r), [Record::End(3)]);
    let problems: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        problems[0].contains("lost record of 4 bytes, expected 9"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("end record of 10 bytes, expected 9"),
        "{problems:?}"
    );
    assert!(
        problems[2].contains("summary JSON of 1048577 bytes"),
        "{problems:?}"
    );
    assert!(
        problems[3].contains("a second header record"),
        "{problems:?}"
    );
    assert_eq!(problems.len(), 4);
}

/// Random damage to a gzip dump: never a panic, and damage is never silent.
#[test]
fn random_gzip_damage_never_panics() {
    let full = sample(true);
    let intact = read_all(&mut Reader::from_bytes(full.clone()));
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..2000 {
        let mut bytes = full.clone();
        match next() % 3 {
            0 => bytes.truncate(2 + (next() as usize) % (full.len() - 2)),
            1 => {
                let i = 2 + (next() as usize) % (bytes.len() - 2);
                bytes[i] ^= 1 << (next() % 8);
            }
            _ => {
                let i = 2 + (next() as usize) % (bytes.len() - 2);
                bytes[i] = next() as u8;
            }
        }
        let mut r = Reader::from_bytes(bytes.clone());
        let recs = read_all(&mut r);
        assert!(recs.len() <= 53);
        // Damage nobody noticed must be damage that changed nothing (the gzip header's
        // mtime or OS byte, the padding bits of a stored block).
        if r.problems.is_empty() {
            assert_eq!(recs, intact);
        }
    }
}

/// The typed header is what a dump holds and what `report` reads back; a field of the
/// wrong type costs that field only, not the header.
#[test]
fn the_typed_header_round_trips_and_a_bad_field_costs_only_itself() {
    let h = Header {
        format: Some(FORMAT_VERSION),
        version: "t".into(),
        hostname: "host".into(),
        kernel: "6.18".into(),
        boot_id: Some("b".into()),
        plan: Some(
            json!([{"hook": "oom_kill", "attach": null}, {"hook": "task_exit", "attach": "tp_btf"}]),
        ),
        environment: Some(json!({"btf": true})),
        page_kb: Some(4),
        options: HeaderOptions {
            timeout_ns: Some(5),
            release_timeout_ns: Some(6),
        },
        death: Some(Death {
            pidfd: false,
            error: Some("no pidfd".into()),
        }),
        gfp_names: Some(crate::kernel::gfp::GfpNames::builtin()),
        clock: HeaderClock {
            realtime_offset_ns: -7,
            monotonic_ns_at_start: Some(8),
        },
    };
    let scratch = ScratchDir::new("dump-typed-header");
    let path = scratch.path().join("d");
    let w = Writer::create(&path, false, &h.to_value()).unwrap();
    w.finish(9).unwrap();
    let r = Reader::open(&path).unwrap();
    let back = Header::from_value(r.header().expect("a header"));
    assert_eq!(back, h);
    assert_eq!(back.attached("oom_kill"), Some(false));
    assert_eq!(back.attached("task_exit"), Some(true));
    assert_eq!(Header::default().attached("task_exit"), None);

    let mut bad = h.to_value();
    bad["page_kb"] = json!("four");
    let back = Header::from_value(&bad);
    assert_eq!(back.page_kb, None);
    assert_eq!(
        (back.hostname.as_str(), back.clock.realtime_offset_ns),
        ("host", -7)
    );
}

/// Symbol records (the names of a stack's kernel addresses) round-trip, and damaged ones
/// are skipped and located.
#[test]
fn symbol_records_round_trip_and_damage_is_skipped() {
    let scratch = ScratchDir::new("dump-symbol");
    let path = scratch.join("symbol.dump");
    let mut w = Writer::create(&path, false, &header()).unwrap();
    w.symbol(0xffff_ffff_8123_4012, "handle_mm_fault+0x12")
        .unwrap();
    w.record(T_SYMBOL, &[1, 2]).unwrap();
    w.symbol(1, &"x".repeat(MAX_SYMBOL_NAME + 1)).unwrap();
    w.finish(1).unwrap();
    let mut r = Reader::open(&path).unwrap();
    let recs = read_all(&mut r);
    assert!(recs.contains(&Record::Symbol(
        0xffff_ffff_8123_4012,
        "handle_mm_fault+0x12".into()
    )));
    let problems: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("no 8-byte address"), "{problems:?}");
    assert!(problems[1].contains("overlong name"), "{problems:?}");
}
