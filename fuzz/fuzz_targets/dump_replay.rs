//! `oomtrace report` on hostile dumps: the reader (plain or gzip), the replay through the
//! tracker and the renderer, and the Perfetto export. Never a panic; a problem is reported.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomtrace::{
    record::dump::Reader,
    printer::Format,
    report::{self, ReplayOptions},
};

fuzz_target!(|data: &[u8]| {
    // Text or JSON output, events shown: chosen by the input's length so that both renderers
    // are reached without changing what the bytes mean.
    let opts = ReplayOptions {
        format: if data.len() % 2 == 1 {
            Format::Json
        } else {
            Format::Text
        },
        events: true,
        timeline: true,
        ..Default::default()
    };
    let mut reader = Reader::from_bytes(data.to_vec());
    let replay = report::replay(&mut reader, &opts, std::io::sink())
        .expect("replay into a sink never fails");
    for timeout_ns in [5_000_000_000, 1] {
        let trace = report::perfetto(&replay, timeout_ns);
        serde_json::to_vec(&trace).expect("the trace serializes");
    }
});
