//! Text helpers every room uses: names from processes and memcgs made safe for a terminal, and
//! sizes for people. A leaf: it imports nothing of the crate.

/// Text for a terminal. Processes name themselves and memcgs are named by whoever creates
/// them: control characters in such names (newline, ESC, …) and bidirectional overrides are
/// shown escaped (`\n`, `\u{1b}`), so that they can neither forge lines nor drive the terminal.
/// JSON needs none of this (serde escapes).
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        c.is_control()
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    // Printable ASCII needs no look at its characters (names, paths and lines mostly are);
    // checked without an early exit, which lets the compiler check many bytes at once.
    let plain = s
        .bytes()
        .fold(true, |ok, b| ok & (b' '..=b'~').contains(&b));
    if plain || !s.chars().any(bad) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if bad(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Human size from kB.
pub(crate) fn kb(kb: u64) -> String {
    if kb >= 10 * 1024 {
        format!("{} MiB", kb / 1024)
    } else {
        format!("{kb} kB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_and_bidi_characters_only() {
        assert_eq!(
            printable("oomtrace-hog /a.b_c-d é"),
            "oomtrace-hog /a.b_c-d é"
        );
        assert_eq!(
            printable("x\ny\x1b[2J\t\u{202e}z"),
            "x\\ny\\u{1b}[2J\\t\\u{202e}z"
        );
    }
}
