//! The dump reader alone (plain or gzip) and the event decoder on what it hands out: the
//! parsing half of `dump_replay`, fast enough to run for millions of inputs (a replay builds
//! a tracker and its latency histograms, which costs about a millisecond per input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomtrace::{
    record::dump::{DumpProblem, MAX_MEMCG_PATH, MAX_MEMCG_RECORDS, Reader, Record},
    event::Event,
};

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::from_bytes(data.to_vec());
    let _ = r.header();
    let mut memcgs = 0;
    while let Some(rec) = r.next_record() {
        match rec {
            Record::Event(raw) => {
                let _ = Event::decode(&raw);
            }
            Record::Memcg(_, path) => {
                memcgs += 1;
                // Lossy UTF-8 may grow a path up to 3x; the bound is on the bytes recorded.
                assert!(path.len() <= 3 * MAX_MEMCG_PATH);
            }
            _ => {}
        }
    }
    assert!(memcgs <= MAX_MEMCG_RECORDS);
    // Reading never ends without saying why, unless the dump ended cleanly.
    assert!(r.clean_end || !r.problems.is_empty());
    for p in &r.problems {
        if let DumpProblem::Gzip { offset, .. } = p {
            assert!(*offset <= data.len() as u64, "{p}");
        }
    }
});
