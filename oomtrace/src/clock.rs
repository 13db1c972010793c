//! Clocks and time text: the kernel's CLOCK_MONOTONIC, its mapping to wall-clock time, and
//! RFC 3339. A leaf: it imports nothing of the crate.

/// Maps kernel monotonic timestamps to wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Clock {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, in ns, taken once at start.
    pub(crate) realtime_offset_ns: i128,
}

impl Clock {
    pub(crate) fn now() -> Clock {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Clock {
            realtime_offset_ns: i128::from(real) - i128::from(mono),
        }
    }

    /// Unix time in ns of a CLOCK_MONOTONIC timestamp.
    pub(crate) fn wall_ns(&self, mono_ns: u64) -> i128 {
        i128::from(mono_ns) + self.realtime_offset_ns
    }
}

/// CLOCK_MONOTONIC (or another clock) now, in ns.
pub(crate) fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC now, the clock of kernel timestamps.
pub(crate) fn monotonic_now() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` from unix ns (UTC).
pub(crate) fn rfc3339(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000) as i64;
    let micros = (unix_ns.rem_euclid(1_000_000_000) / 1000) as u32;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// `HH:MM:SS.ffffff` (UTC) for text lines: the time of [`rfc3339`]'s text (its bytes 11..26).
pub(crate) fn time_of_day(unix_ns: i128) -> String {
    let mut s = String::with_capacity(15);
    push_time_of_day(&mut s, unix_ns);
    s
}

/// [`time_of_day`] appended to `out` (a replay writes one per finding).
pub(crate) fn push_time_of_day(out: &mut String, unix_ns: i128) {
    // Years 1970..=9999 (four-digit years: the slice is the time), written digit by digit: a
    // replay writes one per finding, and the whole date through `format!` was a tenth of it.
    const YEAR_10000_NS: i128 = 253_402_300_800 * 1_000_000_000;
    if !(0..YEAR_10000_NS).contains(&unix_ns) {
        out.push_str(&rfc3339(unix_ns)[11..26]);
        return;
    }
    let secs = (unix_ns / 1_000_000_000) as u64;
    let micros = ((unix_ns % 1_000_000_000) / 1000) as u64;
    let sod = secs % 86_400;
    let mut b = *b"00:00:00.000000";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 2, sod / 3600);
    put(3, 2, sod / 60 % 60);
    put(6, 2, sod % 60);
    put(9, 6, micros);
    debug_assert!(b.is_ascii());
    // SAFETY: ASCII digits, ':' and '.' only (a UTF-8 check of them was 40 % of this).
    out.push_str(unsafe { std::str::from_utf8_unchecked(&b) });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The time of day written digit by digit is the time in the RFC 3339 text, wherever the
    /// instant falls (day and year boundaries, the fast path's edges, outside it).
    #[test]
    fn time_of_day_is_the_time_in_rfc3339() {
        let day = 86_400 * 1_000_000_000i128;
        let mut at: Vec<i128> = vec![
            0,
            1,
            999,
            1_000,
            day - 1,
            day,
            1_764_180_000_000_000_000,
            253_402_300_800 * 1_000_000_000 - 1,
            253_402_300_800 * 1_000_000_000,
            -1,
            -day - 1_234_567,
            i128::from(i64::MAX),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            at.push(i128::from(x % (300 * 365 * 86_400 * 1_000_000_000)));
        }
        for t in at {
            assert_eq!(time_of_day(t), rfc3339(t)[11..26], "{t}");
        }
    }
}
