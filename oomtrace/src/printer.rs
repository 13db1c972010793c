//! The output of `watch` and `report`: one printer per format, each a [`Sink`] that writes
//! whole lines — [`text::Text`] for people, [`json::Json`] for machines (JSON Lines,
//! docs/json.md). `--format` picks one ([`Format`], [`printer`]); the drivers hand it every
//! event, finding and note like any other sink. Text is escaped where it carries names the
//! kernel or a process chose (`text::printable`).

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
mod text;

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
pub(crate) fn printer<'a, W: Write + 'a>(format: Format, out: W) -> Box<dyn Sink + 'a> {
    boxed(format, Out::new(out))
}

/// The printer of `format` for a replay: lines go out in 64 KiB writes and only its close
/// flushes (a flush per tick was a `write` per kill: 248 057 of them for 250 000 kills).
pub(crate) fn replay_printer<'a, W: Write + 'a>(format: Format, out: W) -> Box<dyn Sink + 'a> {
    let mut out = Out::new(io::BufWriter::with_capacity(1 << 16, out));
    out.flush_at_tick = false;
    boxed(format, out)
}

fn boxed<'a, W: Write + 'a>(format: Format, out: Out<W>) -> Box<dyn Sink + 'a> {
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
