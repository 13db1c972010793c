//! A task's name (`comm`) held without an allocation.
//!
//! The kernel's `comm` is at most 16 bytes (`TASK_COMM_LEN`, NUL included): a kill carries
//! several (its target, its sender, the allocating task, the incident's victims), and each as
//! a `String` cost an allocation, a copy and a free per kill (4 % of a replay's instructions).
//! A name decoded as valid UTF-8 always fits inline; only a longer text (a lossily decoded
//! name whose invalid bytes each became U+FFFD, or a name from elsewhere) goes to the heap.
//! It reads as the `str` it holds everywhere: `Display`, `Debug`, comparisons, serialization.

use std::{fmt, ops::Deref};

use serde::Serialize;

/// Bytes held inline: a 16-byte comm with room to spare, the whole value as large as a
/// `String`.
const INLINE: usize = 22;

/// A task's name: see the module docs.
#[derive(Clone)]
pub struct Comm(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Comm {
    /// The empty name.
    pub(crate) const EMPTY: Comm = Comm(Repr::Inline {
        len: 0,
        bytes: [0; INLINE],
    });

    /// The text of a NUL-padded kernel string, lossily as UTF-8 (as [`crate::event::cstr`]).
    #[inline]
    pub(crate) fn from_kernel(bytes: &[u8]) -> Comm {
        if bytes.len() <= INLINE {
            // A kernel comm (16 bytes): copied whole, cut at its NUL, kept as it is when ASCII
            // (every comm in practice) without a look at each byte through a `str`.
            let mut inline = [0; INLINE];
            inline[..bytes.len()].copy_from_slice(bytes);
            let end = inline[..bytes.len()]
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(bytes.len());
            if inline[..end].is_ascii() {
                return Comm(Repr::Inline {
                    len: end as u8,
                    bytes: inline,
                });
            }
        }
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let text = &bytes[..end];
        match std::str::from_utf8(text) {
            Ok(s) => Comm::from(s),
            Err(_) => Comm::from(String::from_utf8_lossy(text).as_ref()),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                // SAFETY: filled only by `From<&str>` with a whole `str` of `len` bytes, or by
                // `from_kernel` with `len` ASCII bytes.
                unsafe { std::str::from_utf8_unchecked(&bytes[..usize::from(*len)]) }
            }
            Repr::Heap(s) => s,
        }
    }
}

impl Default for Comm {
    fn default() -> Comm {
        Comm::EMPTY
    }
}

impl From<&str> for Comm {
    fn from(s: &str) -> Comm {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Comm(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            Comm(Repr::Heap(s.into()))
        }
    }
}

impl From<String> for Comm {
    fn from(s: String) -> Comm {
        if s.len() <= INLINE {
            Comm::from(s.as_str())
        } else {
            Comm(Repr::Heap(s.into_boxed_str()))
        }
    }
}

impl From<Comm> for String {
    fn from(c: Comm) -> String {
        c.as_str().to_owned()
    }
}

impl Deref for Comm {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Comm {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Comm {
    fn eq(&self, other: &Comm) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Comm {}

impl PartialEq<str> for Comm {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Comm {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl std::hash::Hash for Comm {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Comm {
    fn partial_cmp(&self, other: &Comm) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Comm {
    fn cmp(&self, other: &Comm) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// As the `str`'s (width and precision flags included).
impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Comm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comm_reads_as_the_kernel_strings_lossy_text() {
        let cases: [&[u8]; 10] = [
            b"",
            b"bash\0\0\0\0",
            b"exactly15chars!\0",
            b"sixteen_bytes_!!",
            b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3\xf2\xf1\xf0",
            b"ok\xffthen\0",
            "caf\u{e9}\u{1b}[2J".as_bytes(),
            b"\0after",
            b"ab\0\xff\xfe",
            b"a name longer than any comm, no NUL",
        ];
        for bytes in cases {
            let c = Comm::from_kernel(bytes);
            let s = crate::event::cstr(bytes);
            assert_eq!(c.as_str(), s, "{bytes:?}");
            assert_eq!(c, Comm::from(s.clone()));
            assert_eq!(format!("{c}|{c:?}|{c:>30}"), format!("{s}|{s:?}|{s:>30}"));
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                serde_json::to_string(&s).unwrap()
            );
        }
        // Sixteen invalid bytes are 48 bytes of text: on the heap, still the same.
        let long = Comm::from_kernel(&[0xff; 16]);
        assert_eq!(long.as_str(), "\u{fffd}".repeat(16));
        assert!(matches!(long.0, Repr::Heap(_)));
        assert!(matches!(
            Comm::from_kernel(b"sixteen_bytes_!!").0,
            Repr::Inline { .. }
        ));
        assert_eq!(size_of::<Comm>(), size_of::<String>());
        assert_eq!(Comm::default(), "");
        let (a, b) = (Comm::from("a"), Comm::from("b"));
        assert!(a < b, "ordered as their text");
    }
}
