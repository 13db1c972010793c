//! Ring-buffer records as the kernel (or a dump) hands them to `Event::decode`: any bytes give
//! an event or a typed error, and an event encodes back to exactly the bytes it came from —
//! except an `oom_kill`, `mark_victim` or `kernel_sigkill` of an older, shorter layout (dumps),
//! which encodes in the current one: the same bytes, then the fields it lacked, as zeros.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomtrace::event::{Event, Payload};

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = Event::decode(data) {
        let again = ev.encode();
        if again.len() == data.len() {
            assert_eq!(again, data, "decode → encode is not the identity");
        } else {
            assert!(
                matches!(
                    ev.payload,
                    Payload::OomKill(_) | Payload::MarkVictim(_) | Payload::KernelSigkill(_)
                ),
                "only oom_kill, mark_victim and kernel_sigkill have older layouts"
            );
            assert_eq!(
                &again[..data.len()],
                data,
                "the older layout is not a prefix"
            );
            assert!(
                again[data.len()..].iter().all(|&b| b == 0),
                "grown fields not 0"
            );
        }
        assert_eq!(Event::decode(&again), Ok(ev));
    }
});
