//! Every command's output: one printer per format, each a [`Printer`] — a [`Sink`] that writes
//! whole lines, and the writer of what a command says besides events and findings (the banner,
//! `check`'s report, `unstick`'s result; outputs.rs) — [`text::Text`] for people,
//! [`json::Json`] for machines (JSON Lines, docs/json.md). `--format` picks one ([`Format`],
//! matched once: [`printer`]); the drivers hand it every event, finding and note like any
//! other sink. A new format is a type implementing [`Printer`] and a [`Format`] variant. Text
//! is escaped where it carries names the kernel or a process chose (`text::printable`).

use std::io::{self, Write};

use crate::sink::Sink;

/// The [`Sink`] methods every printer has alike, through its [`Out`] (`self.out`): a tick
/// flushes (unless the printer batches), the close flushes and says the first write error,
/// and a failed write is handed to the driver once.
macro_rules! output_methods {
    () => {
        fn tick(&mut self) {
            self.out.tick();
        }

        fn close(
            &mut self,
            _summary: &crate::lifecycle::Summary,
            _end_ns: u64,
        ) -> anyhow::Result<()> {
            Ok(self.out.close()?)
        }

        fn failed(&mut self) -> Option<std::io::Error> {
            self.out.error.take()
        }
    };
}

mod json;
mod outputs;
mod text;

pub(crate) use outputs::Banner;
pub use outputs::{CheckReport, Unstick, UnstickOomDomain, UnstickOomKillerOff, UnstickVictim};

/// A printer: a [`Sink`] of the session's events, findings and notes, and the writer of every
/// other kind of output a command has, one method each. Writes go through its `Out`: the first
/// that fails is kept for [`Sink::failed`].
pub(crate) trait Printer: Sink {
    /// `watch`'s first words.
    fn banner(&mut self, b: &Banner<'_>);
    /// `check`'s report.
    fn check(&mut self, r: &CheckReport);
    /// `unstick`'s result.
    fn unstick(&mut self, u: &Unstick<'_>);
}

/// What a one-shot command (`check`, `unstick`) answers.
pub enum Answer<'a> {
    Check(&'a CheckReport),
    Unstick(&'a Unstick<'a>),
}

/// Writes `answer` to `out` in `format`, flushed; the first write error.
pub fn answer(format: Format, out: impl Write, answer: &Answer<'_>) -> io::Result<()> {
    let mut p = printer(format, out);
    match answer {
        Answer::Check(r) => p.check(r),
        Answer::Unstick(u) => p.unstick(u),
    }
    p.tick();
    p.failed().map_or(Ok(()), Err)
}

/// How a run writes (`--format`).
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum Format {
    /// Lines for people.
    #[default]
    Text,
    /// JSON (Lines), for machines.
    Json,
}

/// The printer of `format`, writing to `out`; each tick flushes (live, a finding must reach
/// its reader at once).
pub(crate) fn printer<'a, W: Write + 'a>(format: Format, out: W) -> Box<dyn Printer + 'a> {
    boxed(format, Out::new(out))
}

/// The printer of `format` for a replay: lines go out in 64 KiB writes and only its close
/// flushes (a flush per tick was a `write` per kill: 248 057 of them for 250 000 kills).
pub(crate) fn replay_printer<'a, W: Write + 'a>(format: Format, out: W) -> Box<dyn Printer + 'a> {
    let mut out = Out::new(io::BufWriter::with_capacity(1 << 16, out));
    out.flush_at_tick = false;
    boxed(format, out)
}

/// The one place formats are told apart.
fn boxed<'a, W: Write + 'a>(format: Format, out: Out<W>) -> Box<dyn Printer + 'a> {
    match format {
        Format::Text => Box::new(text::Text::new(out)),
        Format::Json => Box::new(json::Json::new(out)),
    }
}

/// A printer's output: the first write that fails is kept (and later writes skipped) until the
/// driver takes it ([`Sink::failed`]).
struct Out<W> {
    w: W,
    error: Option<io::Error>,
    flush_at_tick: bool,
}

impl<W: Write> Out<W> {
    fn new(w: W) -> Self {
        Out {
            w,
            error: None,
            flush_at_tick: true,
        }
    }

    /// A tick: flushed unless this printer batches ([`replay_printer`]).
    fn tick(&mut self) {
        if self.flush_at_tick {
            self.flush();
        }
    }

    fn write(&mut self, s: &str) {
        self.kept(|w| w.write_all(s.as_bytes()));
    }

    fn flush(&mut self) {
        self.kept(Write::flush);
    }

    fn kept(&mut self, op: impl FnOnce(&mut W) -> io::Result<()>) {
        if self.error.is_none()
            && let Err(e) = op(&mut self.w)
        {
            self.error = Some(e);
        }
    }

    /// Flushes, and says the first error since it was last taken.
    fn close(&mut self) -> io::Result<()> {
        self.flush();
        self.error.take().map_or(Ok(()), Err)
    }
}

/// Drives `events` through `session` and the printer of `format` as a driver does (each event,
/// then the findings it produced; the end at `end_ns` with its summary); what was printed.
#[cfg(test)]
pub(crate) fn print_all(
    session: &mut crate::session::Session,
    format: Format,
    events: &[crate::event::Event],
    end_ns: u64,
) -> String {
    use crate::{
        lifecycle::Finding,
        session::Session,
        sink::{EventCx, FindingCx, Note},
    };
    fn hand(p: &mut dyn Sink, s: &mut Session, found: &mut Vec<Finding>, at_ns: u64) {
        for f in found.drain(..) {
            let mut cx = FindingCx::new(&f, at_ns, s);
            p.finding(&f, &mut cx);
        }
    }
    let mut buf = Vec::new();
    {
        let mut p = printer(format, &mut buf);
        let mut found = Vec::new();
        for ev in events {
            let shown = session.event(ev, &mut found);
            let mut cx = EventCx {
                memcg: None,
                shown,
                renderer: session.renderer(),
            };
            p.event(ev, &mut cx);
            hand(p.as_mut(), session, &mut found, ev.header.ts_ns);
        }
        let summary = session.finish(end_ns, &mut found);
        hand(p.as_mut(), session, &mut found, end_ns);
        p.note(&Note::Summary(&summary));
        p.close(&summary, end_ns).unwrap();
    }
    String::from_utf8(buf).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{forensics::Forensics, unstick::Wait};

    /// `unstick`'s answer through each printer: the lines and keys it had when it was printed
    /// by hand in the binary.
    #[test]
    fn unstick_answers_in_each_format() {
        let fx = Forensics {
            tgid: 42,
            state: Some("S (sleeping)".into()),
            ..Forensics::default()
        };
        let evidence = Err("pid 42 was not SIGKILLed".to_string());
        let u = Unstick::Victim(UnstickVictim {
            pid: 42,
            apply: false,
            fx: &fx,
            evidence: &evidence,
            wait_on: &Wait::Unknown,
            remedy: None,
            refused: Some("not an OOM victim"),
            applied: None,
            dead: None,
            wait: std::time::Duration::from_secs(5),
            restored: &["limit put back".into()],
        });
        let said = |format| {
            let mut buf = Vec::new();
            answer(format, &mut buf, &Answer::Unstick(&u)).unwrap();
            String::from_utf8(buf).unwrap()
        };
        let text = said(Format::Text);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "pid 42 (S (sleeping))", "{text}");
        assert_eq!(
            lines[1], "OOM victim:  NO: pid 42 was not SIGKILLed",
            "{text}"
        );
        assert!(lines[2].starts_with("waits on:    unknown"), "{text}");
        assert_eq!(lines[3], "REFUSED:     not an OOM victim", "{text}");
        assert_eq!(lines[4], "restored:    limit put back", "{text}");
        assert!(text.ends_with(&format!("{fx}")), "{text}");
        let json = said(Format::Json);
        assert_eq!(json.lines().count(), 1, "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["pid"], 42, "{v}");
        assert_eq!(v["oom_victim"], serde_json::Value::Null, "{v}");
        assert_eq!(v["evidence"], "pid 42 was not SIGKILLed", "{v}");
        assert_eq!(v["refused"], "not an OOM victim", "{v}");
        assert_eq!(v["waits_on"]["kind"], "unknown", "{v}");
        assert_eq!(v["forensics"]["tgid"], 42, "{v}");
    }

    /// A memcg's name is its creator's: a path with a terminal escape in it (one an
    /// unprivileged user may make in a delegated subtree) reaches the terminal escaped, in
    /// every line of an unstick answer.
    #[test]
    fn unstick_text_escapes_what_users_name() {
        let fx = Forensics {
            tgid: 42,
            ..Forensics::default()
        };
        let evil = "/user.slice/\u{1b}]0;owned\u{7}/x";
        let evidence = Ok(format!("SIGKILLed by the OOM killer in {evil}"));
        let applied = crate::host::unstick::Applied {
            did: vec![format!("wrote max to {evil}/memory.max")],
            ok: true,
            raised: true,
            unmount_fusectl: false,
        };
        let remedy = crate::host::unstick::Remedy {
            command: format!("echo max > {evil}/memory.max"),
            risk: format!("{evil} may grow"),
            action: None,
        };
        let restored = [format!("put back {evil}/memory.max")];
        let u = Unstick::Victim(UnstickVictim {
            pid: 42,
            apply: true,
            fx: &fx,
            evidence: &evidence,
            wait_on: &Wait::Unknown,
            remedy: Some(&remedy),
            refused: Some(evil),
            applied: Some(&applied),
            dead: None,
            wait: std::time::Duration::from_secs(5),
            restored: &restored,
        });
        let mut buf = Vec::new();
        answer(Format::Text, &mut buf, &Answer::Unstick(&u)).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert_eq!(text.matches("owned").count(), 6, "{text}");
    }
}
