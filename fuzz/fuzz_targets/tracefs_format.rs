//! Tracepoint `format` files: any text parses or is a typed error naming a line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomtrace::kernel::tracefs::{TracefsError, TracepointFormat};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match TracepointFormat::parse(&text) {
        Ok(f) => {
            assert!(!f.fields.is_empty() && !f.name.is_empty());
            for name in ["pid", "comm", "common_type"] {
                let _ = f.field(name);
            }
        }
        Err(TracefsError::Malformed {
            line, file: None, ..
        }) => {
            assert!(line <= text.lines().count(), "line {line} is past the end");
        }
        Err(e) => panic!("parse gave a non-format error: {e}"),
    }
});
