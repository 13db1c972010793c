//! BTF blobs: whatever parses must answer every lookup the loader makes without a panic, a
//! hang or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomtrace::kernel::btf::Btf;

/// Names in the seed corpus (the unit tests' sample blob and a slice of a real kernel's BTF),
/// so that lookups reach the decoding code and not only the name index.
const MEMBERS: [(&str, &str); 9] = [
    ("outer", "u_in.b"),
    ("outer", "arr"),
    ("legacy", "nib"),
    ("tagged", "t"),
    ("task_struct", "pid"),
    ("task_struct", "signal"),
    ("signal_struct", "live.counter"),
    ("mm_struct", "rss_stat"),
    ("list_head", "next"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::from_bytes(data) else {
        return;
    };
    for (s, p) in MEMBERS {
        let _ = btf.member(s, p);
        let _ = btf.struct_size(s);
    }
    for (e, v) in [
        ("e", "A"),
        ("", "ANON_X"),
        ("e64", "BIG"),
        ("", "MM_ANONPAGES"),
    ] {
        let _ = btf.enum_value(e, v);
    }
    for f in ["f", "oom_kill_process", "do_exit"] {
        let _ = btf.has_function(f);
        let _ = btf.function_args(f);
    }
    for tp in ["tp", "mark_victim", "sched_process_exit"] {
        let _ = btf.tracepoint_args(tp);
    }
    // The skeleton must itself be a blob this reader (and the loader) accepts.
    let skeleton = btf.attach_skeleton(&["f", "oom_kill_process"], &["tp", "mark_victim"]);
    Btf::from_vec(skeleton).expect("attach_skeleton made a blob that does not parse");
});
