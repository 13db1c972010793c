use std::path::Path;

use super::*;

/// Encodes BTF blobs: type records as u32 words, and a string table.
struct Enc {
    words: Vec<u32>,
    strings: Vec<u8>,
    next_id: u32,
}

impl Enc {
    fn new() -> Enc {
        Enc {
            words: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    /// Appends type `id` (asserted, to keep the tables below readable).
    fn ty(&mut self, id: u32, name: &str, kind: u32, vlen: u32, size_or_type: u32, extra: &[u32]) {
        self.kty(id, name, kind, vlen, false, size_or_type, extra);
    }

    #[allow(clippy::too_many_arguments)]
    fn kty(
        &mut self,
        id: u32,
        name: &str,
        kind: u32,
        vlen: u32,
        kflag: bool,
        size_or_type: u32,
        extra: &[u32],
    ) {
        assert_eq!(id, self.next_id, "type ids in the table are out of order");
        self.next_id += 1;
        let name = self.s(name);
        let info = (u32::from(kflag) << 31) | (kind << 24) | vlen;
        self.words.extend([name, info, size_or_type]);
        self.words.extend_from_slice(extra);
    }

    fn s(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn blob(&self) -> Vec<u8> {
        let type_len = self.words.len() as u32 * 4;
        let mut out = vec![0x9f, 0xeb, 1, 0];
        for w in [24, 0, type_len, type_len, self.strings.len() as u32] {
            out.extend(w.to_le_bytes());
        }
        out.extend(self.words.iter().flat_map(|w| w.to_le_bytes()));
        out.extend(&self.strings);
        out
    }
}

/// Member words: name, type, bit offset (or bitfield size << 24 | bit offset).
fn m(e: &mut Enc, name: &str, ty: u32, off: u32) -> [u32; 3] {
    [e.s(name), ty, off]
}

/// Every kind, an anonymous union, a typedef/const chain, bitfields, enums, a tracepoint.
fn sample() -> Vec<u8> {
    let mut e = Enc::new();
    e.ty(1, "int", KIND_INT, 0, 4, &[(1 << 24) | 32]);
    e.ty(2, "unsigned int", KIND_INT, 0, 4, &[32]);
    e.ty(3, "_Bool", KIND_INT, 0, 1, &[(4 << 24) | 8]);
    e.ty(4, "bool", KIND_TYPEDEF, 0, 3, &[]);
    let inner = [m(&mut e, "a", 1, 0), m(&mut e, "b", 1, 32)].concat();
    e.ty(5, "inner", KIND_STRUCT, 2, 8, &inner);
    e.ty(6, "inner_t", KIND_TYPEDEF, 0, 5, &[]);
    e.ty(7, "", KIND_CONST, 0, 6, &[]);
    e.ty(8, "cinner_t", KIND_TYPEDEF, 0, 7, &[]);
    let anon = [m(&mut e, "u_in", 8, 0), m(&mut e, "u_raw", 2, 0)].concat();
    e.ty(9, "", KIND_UNION, 2, 8, &anon);
    let outer = [
        m(&mut e, "x", 1, 0),
        m(&mut e, "", 9, 64),
        m(&mut e, "flags", 2, (3 << 24) | 128),
        m(&mut e, "ok", 4, 160),
        m(&mut e, "p", 11, 192),
        m(&mut e, "arr", 12, 256),
    ]
    .concat();
    e.kty(10, "outer", KIND_STRUCT, 6, true, 40, &outer);
    e.ty(11, "", KIND_PTR, 0, 10, &[]);
    e.ty(12, "", KIND_ARRAY, 0, 0, &[1, 2, 2]);
    let (a, b) = (e.s("A"), e.s("B"));
    e.kty(13, "e", KIND_ENUM, 2, true, 4, &[a, u32::MAX, b, 7]);
    let big = e.s("BIG");
    e.ty(14, "e64", KIND_ENUM64, 1, 8, &[big, 2, 1]);
    let anon_x = e.s("ANON_X");
    e.ty(15, "", KIND_ENUM, 1, 4, &[anon_x, 3]);
    let params = [e.s("__data"), 17, e.s("task"), 11, e.s("flag"), 4];
    e.ty(16, "", KIND_FUNC_PROTO, 3, 1, &params);
    e.ty(17, "", KIND_PTR, 0, 0, &[]);
    e.ty(18, "", KIND_PTR, 0, 16, &[]);
    e.ty(19, "btf_trace_tp", KIND_TYPEDEF, 0, 18, &[]);
    e.ty(20, "f", KIND_FUNC, 0, 21, &[]);
    let params = [e.s("o"), 23, 0, 0];
    e.ty(21, "", KIND_FUNC_PROTO, 2, 0, &params);
    e.ty(22, "opaque", KIND_FWD, 0, 0, &[]);
    e.ty(23, "", KIND_PTR, 0, 22, &[]);
    let legacy = m(&mut e, "nib", 25, 4);
    e.ty(24, "legacy", KIND_STRUCT, 1, 4, &legacy);
    e.ty(25, "nibble", KIND_INT, 0, 4, &[4]);
    e.ty(26, "double", KIND_FLOAT, 0, 8, &[]);
    e.ty(27, "tag", KIND_DECL_TAG, 0, 10, &[u32::MAX]);
    e.ty(28, "v", KIND_VAR, 0, 1, &[1]);
    e.ty(29, ".data", KIND_DATASEC, 1, 4, &[28, 0, 4]);
    e.ty(30, "user", KIND_TYPE_TAG, 0, 1, &[]);
    e.ty(31, "", KIND_VOLATILE, 0, 30, &[]);
    e.ty(32, "", KIND_RESTRICT, 0, 31, &[]);
    let tagged = [m(&mut e, "t", 32, 0), m(&mut e, "d", 26, 64)].concat();
    e.ty(33, "tagged", KIND_STRUCT, 2, 16, &tagged);
    e.blob()
}

fn int(size: u32, signed: bool) -> TypeDesc {
    TypeDesc::Int {
        size,
        signed,
        bool_: false,
    }
}

fn ptr_to_struct(name: &str, size: u32) -> TypeDesc {
    TypeDesc::Ptr {
        to: Box::new(TypeDesc::Struct {
            name: name.into(),
            size,
        }),
    }
}

/// aya's loaders find the kernel's type ids in the skeleton: the same as in the full BTF.
#[test]
fn attach_skeleton_keeps_the_ids_aya_looks_up() {
    use aya_obj::btf::BtfKind;
    let btf = Btf::from_bytes(&sample()).unwrap();
    let skeleton = btf.attach_skeleton(&["f", "f", "no_such_fn"], &["tp", "no_such_tp"]);
    let aya = aya::Btf::parse(&skeleton, aya::Endianness::default()).unwrap();
    assert_eq!(aya.id_by_type_name_kind("f", BtfKind::Func).unwrap(), 20);
    assert_eq!(
        aya.id_by_type_name_kind("btf_trace_tp", BtfKind::Typedef)
            .unwrap(),
        19
    );
    assert!(
        aya.id_by_type_name_kind("no_such_fn", BtfKind::Func)
            .is_err()
    );
    // Nothing else keeps a name, and the blob ends at the last type kept.
    let ours = Btf::from_vec(skeleton).unwrap();
    assert_eq!(ours.starts.len() - 1, 20);
    assert!(ours.has_function("f"));
    assert!(!ours.has_function("opaque"));
    assert!(ours.composite("outer").is_err());
    // Nothing to keep: a valid, empty BTF.
    let empty = btf.attach_skeleton(&[], &[]);
    assert_eq!(Btf::from_vec(empty).unwrap().starts.len(), 1);
}

#[test]
fn members_through_anonymous_unions_typedefs_and_nested_paths() {
    let btf = Btf::from_bytes(&sample()).unwrap();
    assert_eq!(btf.member_offset("outer", "x").unwrap(), 0);
    assert_eq!(btf.member_offset("outer", "u_raw").unwrap(), 8);
    let m = btf.member("outer", "u_in").unwrap();
    assert_eq!((m.offset, m.size), (8, 8));
    assert_eq!(
        m.ty,
        TypeDesc::Struct {
            name: "inner".into(),
            size: 8
        }
    );
    let b = btf.member("outer", "u_in.b").unwrap();
    assert_eq!((b.offset, b.size, b.ty), (12, 4, int(4, true)));
    let ok = btf.member("outer", "ok").unwrap();
    let bool_ = TypeDesc::Int {
        size: 1,
        signed: false,
        bool_: true,
    };
    assert_eq!((ok.offset, ok.size, ok.ty), (20, 1, bool_));
    let p = btf.member("outer", "p").unwrap();
    assert_eq!(
        (p.offset, p.size, p.ty),
        (24, 8, ptr_to_struct("outer", 40))
    );
    let arr = btf.member("outer", "arr").unwrap();
    let arr_ty = TypeDesc::Array {
        elem: Box::new(int(4, true)),
        elem_size: 4,
        len: 2,
    };
    assert_eq!((arr.offset, arr.size, arr.ty), (32, 8, arr_ty));
    assert_eq!(btf.member("tagged", "t").unwrap().ty, int(4, true));
    assert_eq!(
        btf.member("tagged", "d").unwrap().ty,
        TypeDesc::Other("double".into())
    );
    assert_eq!(btf.struct_size("outer").unwrap(), 40);
    assert_eq!(btf.struct_size("inner").unwrap(), 8);
}

#[test]
fn member_lookup_errors() {
    let btf = Btf::from_bytes(&sample()).unwrap();
    let err = |s: &str, p: &str| btf.member(s, p).unwrap_err().to_string();
    assert_eq!(err("outer", "flags"), "member `outer.flags` is a bitfield");
    assert_eq!(err("legacy", "nib"), "member `legacy.nib` is a bitfield");
    assert_eq!(err("outer", "nope"), "struct outer has no member `nope`");
    assert_eq!(
        err("outer", "u_in.c"),
        "struct outer has no member `u_in.c`"
    );
    assert_eq!(err("outer", "u_in."), "struct outer has no member `u_in.`");
    assert_eq!(err("outer", ""), "struct outer has no member ``");
    assert!(err("outer", "x.y").starts_with("member `outer.x` is not a struct or union"));
    assert!(err("outer", "p.x").starts_with("member `outer.p` is not a struct or union"));
    assert_eq!(err("nostruct", "x"), "no struct named `nostruct`");
    // A forward declaration is not a struct with members.
    assert!(matches!(
        btf.struct_size("opaque"),
        Err(BtfError::NoStruct(_))
    ));
    assert!(matches!(btf.member("int", "x"), Err(BtfError::NoStruct(_))));
}

#[test]
fn enums() {
    let btf = Btf::from_bytes(&sample()).unwrap();
    assert_eq!(btf.enum_value("e", "A").unwrap(), -1);
    assert_eq!(btf.enum_value("e", "B").unwrap(), 7);
    assert_eq!(btf.enum_value("e64", "BIG").unwrap(), 0x1_0000_0002);
    assert_eq!(btf.enum_value("", "ANON_X").unwrap(), 3);
    assert_eq!(
        btf.enum_value("e", "C").unwrap_err().to_string(),
        "enum e has no variant `C`"
    );
    assert_eq!(
        btf.enum_value("e", "").unwrap_err().to_string(),
        "enum e has no variant ``"
    );
    assert_eq!(
        btf.enum_value("f", "A").unwrap_err().to_string(),
        "no enum named `f`"
    );
}

#[test]
fn functions_and_tracepoints() {
    let btf = Btf::from_bytes(&sample()).unwrap();
    assert!(btf.has_function("f"));
    assert!(!btf.has_function("g"));
    assert!(!btf.has_function("btf_trace_tp"));
    let opaque = TypeDesc::Ptr {
        to: Box::new(TypeDesc::Struct {
            name: "opaque".into(),
            size: 0,
        }),
    };
    let (args, ret) = btf.function_args("f").unwrap();
    assert_eq!(args, [opaque, TypeDesc::Other("...".into())]);
    assert_eq!(ret, TypeDesc::Void);
    let bool_ = TypeDesc::Int {
        size: 1,
        signed: false,
        bool_: true,
    };
    assert_eq!(
        btf.tracepoint_args("tp").unwrap(),
        [ptr_to_struct("outer", 40), bool_]
    );
    let err = btf.tracepoint_args("nope").unwrap_err().to_string();
    assert_eq!(err, "no btf tracepoint `nope` (no typedef btf_trace_nope)");
    assert!(matches!(
        btf.function_args("tp"),
        Err(BtfError::NoFunction(_))
    ));
}

#[test]
fn bad_blobs_are_errors_not_panics() {
    let blob = sample();
    for cut in 0..blob.len() {
        assert!(Btf::from_bytes(&blob[..cut]).is_err(), "cut at {cut}");
    }
    let err = Btf::from_bytes(&blob[..30]).unwrap_err().to_string();
    assert!(err.starts_with("btf blob truncated at byte 30"), "{err}");
    let err = Btf::from_bytes(b"\x7fELF\x02\x01\x01\0").err().unwrap();
    assert_eq!(
        err.to_string(),
        "bad magic 0x457f at byte 0: not a little-endian btf blob (expected 0xeb9f)"
    );
    let mut v2 = blob.clone();
    v2[2] = 2;
    assert!(matches!(Btf::from_bytes(&v2), Err(BtfError::BadHeader(_))));
    let mut e = Enc::new();
    e.ty(1, "int", KIND_INT, 0, 4, &[32]);
    e.ty(2, "future", 25, 0, 0, &[]);
    let err = Btf::from_bytes(&e.blob()).err().unwrap();
    assert_eq!(
        err.to_string(),
        "unknown btf kind 25 for type id 2 at byte 40"
    );
    let err = Btf::from_file(Path::new("/nonexistent/btf")).err().unwrap();
    assert_eq!(err.to_string(), "cannot read btf from /nonexistent/btf");
    assert!(std::error::Error::source(&err).is_some());
}

/// Cycles that a well-formed kernel never has must end in errors, not hang or overflow.
#[test]
fn cyclic_types_terminate() {
    let mut e = Enc::new();
    e.ty(1, "loop_t", KIND_TYPEDEF, 0, 1, &[]);
    e.ty(2, "", KIND_PTR, 0, 2, &[]);
    e.ty(3, "", KIND_ARRAY, 0, 0, &[3, 0, 2]);
    let members = [
        m(&mut e, "", 4, 0),
        m(&mut e, "", 4, 0),
        m(&mut e, "p", 2, 0),
    ]
    .concat();
    e.ty(4, "selfish", KIND_STRUCT, 3, 8, &members);
    let members = [
        m(&mut e, "l", 1, 0),
        m(&mut e, "a", 3, 0),
        m(&mut e, "s", 4, 0),
    ]
    .concat();
    e.ty(5, "holder", KIND_STRUCT, 3, 8, &members);
    let btf = Btf::from_bytes(&e.blob()).unwrap();
    assert!(btf.member("selfish", "nope").is_err());
    assert!(btf.member("holder", "s.p").is_ok());
    assert!(btf.member("holder", "l").is_ok());
    assert!(btf.member("holder", "a").is_ok());
    assert!(btf.member("holder", "l.x").is_err());
}

/// Random corruptions of a valid blob: whatever parses must answer every query.
#[test]
fn corrupted_blobs_never_panic() {
    let blob = sample();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..3000 {
        let mut b = blob.clone();
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = 2 + (seed as usize >> 8) % (b.len() - 2);
            b[at] = seed as u8;
        }
        let Ok(btf) = Btf::from_bytes(&b) else {
            continue;
        };
        for (s, p) in [
            ("outer", "u_in.b"),
            ("outer", "p"),
            ("outer", "arr"),
            ("legacy", "nib"),
            ("tagged", "t"),
        ] {
            let _ = btf.member(s, p);
            let _ = btf.struct_size(s);
        }
        let _ = (
            btf.enum_value("e", "A"),
            btf.enum_value("", "ANON_X"),
            btf.enum_value("e64", "BIG"),
        );
        let _ = (
            btf.tracepoint_args("tp"),
            btf.function_args("f"),
            btf.has_function("f"),
        );
    }
}

/// Facts of the kernel this was written on (6.18), checked where its BTF is readable.
#[test]
fn the_running_kernel() {
    let path = Path::new(Btf::VMLINUX);
    if !path.exists() {
        eprintln!(
            "skipped: {} does not exist (kernel without BTF)",
            path.display()
        );
        return;
    }
    let btf = Btf::from_file(path).unwrap();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // Mapped where the kernel allows it (6.16 on), else read; parsed alike either way.
    let blob = Blob::map_or_read(path).unwrap();
    let mut version = release.split('.').map_while(|n| n.parse::<u32>().ok());
    let mappable = (version.next(), version.next()) >= (Some(6), Some(16));
    assert_eq!(blob.mapped(), mappable, "kernel {}", release.trim());
    let mapped = Btf::from_blob(blob).unwrap();
    assert_eq!(mapped.starts, btf.starts);
    assert_eq!(
        mapped.member_offset("task_struct", "comm").unwrap(),
        btf.member_offset("task_struct", "comm").unwrap()
    );
    // Structs move between kernel versions and configs; those checks are for 6.18 only.
    if release.starts_with("6.18.") {
        let off = |s: &str, p: &str| btf.member_offset(s, p).unwrap();
        assert_eq!(off("task_struct", "pid"), 1264);
        assert_eq!(off("task_struct", "tgid"), 1268);
        assert_eq!(off("task_struct", "comm"), 1752);
        assert_eq!(off("task_struct", "cgroups"), 2376);
        assert_eq!(off("oom_control", "chosen"), 40);
    } else {
        eprintln!("kernel {}: skipping the 6.18 offsets", release.trim());
    }
    let comm = btf.member("task_struct", "comm").unwrap();
    assert!(
        matches!(comm.ty, TypeDesc::Array { len: 16, .. }),
        "{comm:?}"
    );
    assert_eq!(comm.size, 16);
    let task_ptr = ptr_to_struct("task_struct", btf.struct_size("task_struct").unwrap());
    assert_eq!(
        btf.tracepoint_args("mark_victim").unwrap(),
        [task_ptr.clone(), int(4, false)]
    );
    let exit = btf.tracepoint_args("sched_process_exit").unwrap();
    let bool_ = TypeDesc::Int {
        size: 1,
        signed: false,
        bool_: true,
    };
    assert_eq!(exit, [task_ptr, bool_]);
    assert!(btf.enum_value("cgroup_subsys_id", "memory_cgrp_id").is_ok());
    assert!(btf.has_function("oom_kill_process"));
    let (args, ret) = btf.function_args("oom_kill_process").unwrap();
    let oc = ptr_to_struct("oom_control", btf.struct_size("oom_control").unwrap());
    assert_eq!((args.len(), &args[0]), (2, &oc));
    // `const char *`; char is unsigned since 6.2 (-funsigned-char), signed before on x86.
    let TypeDesc::Ptr { to } = &args[1] else {
        panic!("{args:?}")
    };
    assert!(
        matches!(
            **to,
            TypeDesc::Int {
                size: 1,
                bool_: false,
                ..
            }
        ),
        "{to:?}"
    );
    assert_eq!(ret, TypeDesc::Void);
    let id = btf.member("kernfs_node", "id").unwrap();
    assert_eq!((id.size, id.ty), (8, int(8, false)));
    let live = btf.member("signal_struct", "live.counter").unwrap();
    assert_eq!((live.size, live.ty), (4, int(4, true)));
    let rss = btf.member("mm_struct", "rss_stat").unwrap();
    let counter = btf.struct_size("percpu_counter").unwrap();
    let TypeDesc::Array {
        elem,
        elem_size,
        len,
    } = rss.ty
    else {
        panic!("{rss:?}")
    };
    assert_eq!(
        *elem,
        TypeDesc::Struct {
            name: "percpu_counter".into(),
            size: counter
        }
    );
    assert_eq!((elem_size, rss.size), (counter, counter * len));
    assert!(btf.member_offset("task_struct", "start_boottime").is_ok());
    assert!(btf.member_offset("percpu_counter", "count").is_ok());
    assert!(btf.enum_value("", "MM_ANONPAGES").is_ok());
}

/// The attach skeleton's ids are the running kernel's: the same as aya finds in its full parse.
#[test]
fn the_running_kernels_skeleton_keeps_its_ids() {
    let path = Path::new(Btf::VMLINUX);
    if !path.exists() {
        eprintln!(
            "skipped: {} does not exist (kernel without BTF)",
            path.display()
        );
        return;
    }
    let btf = Btf::from_file(path).unwrap();
    use aya_obj::btf::BtfKind;
    let (functions, tracepoints) = (["oom_kill_process"], ["mark_victim", "sched_process_exit"]);
    let skeleton = btf.attach_skeleton(&functions, &tracepoints);
    let parse = |b: &[u8]| aya::Btf::parse(b, aya::Endianness::default()).unwrap();
    let (full, skeleton) = (parse(&std::fs::read(path).unwrap()), parse(&skeleton));
    let names = functions
        .map(|f| (f.to_string(), BtfKind::Func))
        .into_iter()
        .chain(tracepoints.map(|t| (format!("btf_trace_{t}"), BtfKind::Typedef)));
    for (name, kind) in names {
        let id = |b: &aya::Btf| b.id_by_type_name_kind(&name, kind).unwrap();
        assert_eq!(id(&skeleton), id(&full), "{name}");
    }
}

/// A name hashes alike whether it ends at a NUL (in the string section) or at the end of the
/// slice (a name looked up), at every length around the eight bytes hashed at a time.
#[test]
fn a_name_hashes_alike_ended_by_nul_or_by_its_end() {
    let long = "abcdefghijklmnopqrstuvwxyz_0123456789";
    for n in 0..long.len() {
        let name = &long.as_bytes()[..n];
        let mut terminated = name.to_vec();
        terminated.extend_from_slice(b"\0trailing bytes after the NUL");
        assert_eq!(hash_name(name), hash_name(&terminated), "length {n}");
        // A name one byte longer (a prefix of it) hashes otherwise.
        assert_ne!(
            hash_name(name),
            hash_name(&long.as_bytes()[..n + 1]),
            "length {n}"
        );
    }
}

/// Every named type of the running kernel is found under its name by the index.
#[test]
fn the_running_kernels_every_named_type_is_found_by_its_name() {
    let path = Path::new(Btf::VMLINUX);
    if !path.exists() {
        eprintln!(
            "skipped: {} does not exist (kernel without BTF)",
            path.display()
        );
        return;
    }
    let btf = Btf::from_blob(Blob::map_or_read(path).unwrap()).unwrap();
    let mut named = 0;
    for id in 1..btf.starts.len() as u32 {
        let t = btf.ty(id).unwrap();
        let name = btf.name_of(&t);
        if t.name == 0 || name.is_empty() {
            continue;
        }
        named += 1;
        assert!(
            btf.named(name, |u| u.id == id).next().is_some(),
            "type {id} {name:?} not found by its name"
        );
    }
    assert!(named > 1000, "{named} named types");
}

/// An index of a few names finds each of them at the same ids as the index of every name
/// (names sharing their first eight bytes, at and around eight bytes long, absent ones), and
/// finds a name it was not given through the index of every name, counted.
#[test]
fn an_index_of_a_few_names_finds_what_the_whole_index_finds() {
    let path = Path::new(Btf::VMLINUX);
    let blob =
        || Blob::map_or_read(path).expect("the kernel's BTF (every kernel of the matrix has it)");
    let all = Btf::from_blob(blob()).unwrap();
    let names = [
        "task_struct",
        "task_stru",
        "file",
        "inode",
        "cgroup",
        "cgroup_root",
        "oom_kill_process",
        "no_such_type_in_any_kernel",
        "__x64_sys_kill",
        "int",
        "unsigned int",
        "long int",
        "",
    ];
    let tracepoints = ["mark_victim", "sched_process_exit", "no_such_tracepoint"];
    let listed = Btf::from_blob_for(blob(), &names, &tracepoints).unwrap();
    let ids = |b: &Btf, n: &str| b.named(n, |_| true).map(|t| t.id).collect::<Vec<_>>();
    let typedefs = tracepoints.map(tracepoint_typedef);
    for n in names
        .iter()
        .copied()
        .chain(typedefs.iter().map(String::as_str))
    {
        if n.is_empty() {
            continue;
        }
        assert_eq!(ids(&listed, n), ids(&all, n), "{n}");
    }
    assert!(!ids(&listed, "task_struct").is_empty());
    assert_eq!(ids(&listed, "btf_trace_mark_victim").len(), 1);
    assert_eq!(listed.unlisted_lookups(), 0);
    assert_eq!(listed.ptr_size, all.ptr_size);
    assert_eq!(ids(&listed, "mm_struct"), ids(&all, "mm_struct"));
    assert_eq!(ids(&listed, "task_structx"), ids(&all, "task_structx"));
    assert_eq!(listed.unlisted_lookups(), 2);
}

/// A name's first word is the same whether it ends at a NUL or at the end of the slice.
#[test]
fn a_names_first_word_ends_at_its_nul() {
    let long = b"abcdefghijkl";
    for n in 0..long.len() {
        let mut terminated = long[..n].to_vec();
        terminated.extend_from_slice(b"\0xyzxyzxyz");
        assert_eq!(
            first_word(&long[..n]),
            first_word(&terminated),
            "length {n}"
        );
        if n < 8 {
            assert_ne!(
                first_word(&long[..n]),
                first_word(&long[..n + 1]),
                "length {n}"
            );
        }
    }
}
