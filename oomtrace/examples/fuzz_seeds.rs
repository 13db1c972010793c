//! Regenerates the seed corpora under `fuzz/corpus/<target>/` (committed; small on purpose):
//!
//! - `dump_replay` and `dump_read`: dumps written by `oomtrace::record::dump::Writer` from synthetic OOM episodes:
//!   normal kills, a stuck victim, a format-1 (legacy) dump, out-of-order timestamps, gzip'd
//!   and cut ones;
//! - `event_decode`: one encoded record of every event kind;
//! - `tracefs_format`: this kernel's `events/{oom,signal,sched}/*/format` files (tracefs must
//!   be mounted), else the unit tests' fixtures;
//! - `btf_parse`: the first types of this kernel's `/sys/kernel/btf/vmlinux`, re-packed into a
//!   small valid blob with its own string table; the unit tests' sample blob is added by hand
//!   (`fuzz/corpus/btf_parse/unit-test-sample.btf`).
//!
//! Run from the repository: `cargo run --release -p oomtrace --example fuzz_seeds`. It lives
//! in the main workspace (not in `fuzz/`) so that the unit tests and clippy build it with the
//! library it uses, at no extra cost.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use oomtrace::{
    event::{Event, Payload, comm_bytes},
    kernel::btf::Btf,
    record::{dump::Writer, synth},
};
use oomtrace_common::{EventKind, GroupExited, Header, exit_seen};
use serde_json::{Value, json};

const S: u64 = 1_000_000_000;

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn header(format: u32) -> Value {
    let plan: Vec<Value> = [
        ("oom_invoke", "fentry"),
        ("oom_kill", "fentry"),
        ("kernel_sigkill", "tp_btf"),
        ("mark_victim", "tp_btf"),
        ("wake_reaper", "tracepoint"),
        ("task_exit", "tp_btf"),
        ("task_free", "tp_btf"),
    ]
    .iter()
    .map(|(hook, attach)| json!({"hook": hook, "attach": attach}))
    .collect();
    let mut h = json!({
        "format": format, "version": "0.1.0", "hostname": "seed", "kernel": "6.18.0",
        "boot_id": "00000000-0000-0000-0000-000000000000", "plan": plan, "page_kb": 4,
        "options": {"timeout_ns": 5 * S, "release_timeout_ns": 30 * S},
        "death": {"pidfd": true},
        "clock": {"realtime_offset_ns": 1_700_000_000i64 * 1_000_000_000, "monotonic_ns_at_start": 1_000 * S},
    });
    if format < 2 {
        h.as_object_mut().unwrap().remove("death");
    }
    h
}

fn group_exited(after: &Event) -> Event {
    Event {
        header: Header {
            ts_ns: after.header.ts_ns + 1_000,
            ..after.header
        },
        payload: Payload::GroupExited(GroupExited {
            pid: after.header.tgid,
            how: exit_seen::PIDFD,
            start_ns: 0,
            tid: 0,
            _pad: 0,
        }),
    }
}

/// Writes a dump of `events` (memcg paths first, as the recorder does) and returns its bytes.
fn dump(name: &str, h: &Value, events: &[Event], compress: bool, finish: bool) -> Vec<u8> {
    let path = std::env::temp_dir().join(format!("oomtrace-seed-{}-{name}", std::process::id()));
    let mut w = Writer::create(&path, compress, h).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for ev in events {
        if let Payload::OomInvoke(p) = ev.payload
            && seen.insert(p.memcg_id)
        {
            w.memcg(p.memcg_id, &format!("/sys/fs/cgroup/seed/m{}", p.memcg_id))
                .unwrap();
        }
        w.event(&ev.encode()).unwrap();
    }
    w.lost(2).unwrap();
    w.summary(&json!({"type": "summary", "kills": 3})).unwrap();
    if finish {
        w.finish(events.last().map_or(0, |e| e.header.ts_ns) + 60 * S)
            .unwrap();
    } else {
        w.flush().unwrap();
        drop(w);
    }
    let bytes = fs::read(&path).unwrap();
    fs::remove_file(&path).unwrap();
    bytes
}

fn dumps() {
    let dir = corpus("dump_replay");
    let copy = corpus("dump_read");
    let mut normal: Vec<Event> = Vec::new();
    for ev in synth::episodes(3, 2) {
        let last_exit = matches!(ev.payload, Payload::TaskExit(t) if t.group_dead == 1);
        normal.push(ev);
        if last_exit {
            normal.push(group_exited(&ev));
        }
    }
    let write = |name: &str, bytes: &[u8]| {
        fs::write(dir.join(name), bytes).unwrap();
        fs::write(copy.join(name), bytes).unwrap();
    };
    write("normal.dump", &dump("n", &header(2), &normal, false, true));
    write(
        "normal.dump.gz",
        &dump("g", &header(2), &normal, true, true),
    );
    // The second victim exits 8 s late (stuck past the 5 s timeout), after everything else.
    let victim = 100_001;
    let (late, mut stuck): (Vec<Event>, Vec<Event>) = normal.iter().partition(|e| {
        e.header.tgid == victim
            && matches!(e.payload, Payload::TaskExit(_) | Payload::GroupExited(_))
    });
    stuck.extend(late.into_iter().map(|mut e| {
        e.header.ts_ns += 8 * S;
        e
    }));
    write("stuck.dump", &dump("s", &header(2), &stuck, false, true));
    let legacy: Vec<Event> = synth::episodes(2, 3).collect();
    write(
        "legacy-format1.dump",
        &dump("l", &header(1), &legacy, false, true),
    );
    // Timestamps going backwards (clock trouble, or records merged from two CPUs).
    let mut disorder = normal.clone();
    for (i, e) in disorder.iter_mut().enumerate() {
        e.header.ts_ns = 2_000 * S - (i as u64) * 7 * 1_000_000;
    }
    write(
        "disorder.dump",
        &dump("d", &header(2), &disorder, false, true),
    );
    // The recorder killed mid-run: no end record, the gzip stream cut after a sync flush.
    let cut = dump("c", &header(2), &normal, true, false);
    write("cut-no-end.dump.gz", &cut);
}

fn events() {
    let dir = corpus("event_decode");
    let mut by_kind: HashMap<EventKind, Event> = HashMap::new();
    for ev in synth::episodes(2, 2) {
        by_kind.entry(ev.kind()).or_insert(ev);
    }
    let base = Header {
        kind: 0,
        cpu: 1,
        ts_ns: 1_000 * S,
        pid: 42,
        tgid: 42,
        comm: comm_bytes("hog"),
    };
    for payload in [
        Payload::OomInvokeDone(zero()),
        Payload::OomKill(zero()),
        Payload::StartReaping(zero()),
        Payload::FinishReaping(zero()),
        Payload::SkipReaping(zero()),
        Payload::PreExisting(zero()),
        Payload::MemcgOom(zero()),
        Payload::CgroupMkdir(zero()),
        Payload::CgroupRmdir(zero()),
        Payload::ParentNotified(zero()),
    ] {
        let ev = Event {
            header: base,
            payload,
        };
        by_kind.entry(ev.kind()).or_insert(ev);
    }
    let exit = by_kind[&EventKind::TaskExit];
    by_kind.insert(EventKind::GroupExited, group_exited(&exit));
    for (kind, ev) in by_kind {
        fs::write(dir.join(format!("{kind:?}.bin")), ev.encode()).unwrap();
    }
}

fn formats() {
    let dir = corpus("tracefs_format");
    let live = Path::new("/sys/kernel/tracing/events");
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/6.18");
    let root = if live.join("oom").is_dir() {
        live.to_path_buf()
    } else {
        testdata
    };
    for category in ["oom", "signal", "sched"] {
        let Ok(entries) = fs::read_dir(root.join(category)) else {
            continue;
        };
        for e in entries.flatten() {
            if let Ok(text) = fs::read(e.path().join("format")) {
                let name = format!("{category}-{}", e.file_name().to_string_lossy());
                fs::write(dir.join(name), text).unwrap();
            }
        }
    }
}

/// An all-zero payload.
fn zero<T: Copy>() -> T {
    // SAFETY: only called for the plain-old-data payloads of oomtrace-common, for which
    // all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Types 1..=`keep` of a BTF blob with a string table of only the names they use (references
/// to later types dangle, which the reader must survive anyway).
fn btf_prefix(data: &[u8], keep: u32) -> Vec<u8> {
    let hdr = le32(data, 4) as usize;
    let (type_off, type_len) = (le32(data, 8) as usize, le32(data, 12) as usize);
    let str_off = le32(data, 16) as usize;
    let types = &data[hdr + type_off..hdr + type_off + type_len];
    let strings = &data[hdr + str_off..];
    let mut new_strings = vec![0u8];
    let mut remap: HashMap<u32, u32> = HashMap::from([(0, 0)]);
    let mut name = |off: u32| -> u32 {
        *remap.entry(off).or_insert_with(|| {
            let s = &strings[off as usize..];
            let end = s.iter().position(|&b| b == 0).unwrap();
            let at = new_strings.len() as u32;
            new_strings.extend_from_slice(&s[..=end]);
            at
        })
    };
    let mut out_types = Vec::new();
    let mut pos = 0;
    for _ in 0..keep {
        let info = le32(types, pos + 4);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        // (bytes of trailing data, words per entry, which word of an entry is a name)
        let (extra, stride, named) = match kind {
            1 | 14 | 17 => (4, 0, false),
            3 => (12, 0, false),
            6 => (8 * vlen, 2, true),
            13 => (8 * vlen, 2, true),
            4 | 5 | 19 => (12 * vlen, 3, true),
            15 => (12 * vlen, 3, false),
            _ => (0, 0, false),
        };
        let mut rec = types[pos..pos + 12 + extra].to_vec();
        let n = name(le32(&rec, 0));
        rec[..4].copy_from_slice(&n.to_le_bytes());
        if named {
            for e in 0..vlen {
                let at = 12 + e * stride * 4;
                let n = name(le32(&rec, at));
                rec[at..at + 4].copy_from_slice(&n.to_le_bytes());
            }
        }
        out_types.extend(rec);
        pos += 12 + extra;
    }
    let mut out = vec![0x9f, 0xeb, 1, 0];
    let tl = out_types.len() as u32;
    for w in [24, 0, tl, tl, new_strings.len() as u32] {
        out.extend(w.to_le_bytes());
    }
    out.extend(out_types);
    out.extend(new_strings);
    out
}

fn btf() {
    let dir = corpus("btf_parse");
    let Ok(vmlinux) = fs::read(Btf::VMLINUX) else {
        eprintln!("no kernel BTF here: btf_parse keeps only its checked-in seeds");
        return;
    };
    for keep in [40, 600] {
        let blob = btf_prefix(&vmlinux, keep);
        Btf::from_bytes(&blob).expect("the re-packed blob parses");
        fs::write(dir.join(format!("vmlinux-first-{keep}-types.btf")), blob).unwrap();
    }
}

fn main() {
    dumps();
    events();
    formats();
    btf();
}
