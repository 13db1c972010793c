//! Ring-buffer records as the kernel (or a dump) hands them to `Event::decode`: any bytes give
//! an event or a typed error, and an event encodes back to exactly the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomtrace::event::Event;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = Event::decode(data) {
        assert_eq!(ev.encode(), data, "decode → encode is not the identity");
        assert_eq!(Event::decode(&ev.encode()), Ok(ev));
    }
});
