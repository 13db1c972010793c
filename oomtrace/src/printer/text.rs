//! Lines for people: an event or a finding per line (a finding's reasons and forensics
//! indented below it), names escaped.

mod commands;

use std::{collections::HashSet, fmt::Write as _, io::Write};

use super::Out;
use crate::{
    clock::push_time_of_day,
    event::Event,
    lifecycle::Finding,
    render::events::{self, Quiet},
    sink::{EventCx, FindingCx, Note, Said, Sink},
    text::printable,
    workload,
};

/// Processes whose events text output keeps quiet, at most.
const MAX_QUIET_PIDS: usize = 8192;

/// The text printer.
pub(crate) struct Text<W> {
    out: Out<W>,
    /// Processes a user process SIGKILLed: text leaves their kill and exit events out (a
    /// kill that works is not news; one that does not stick is a `kill_stuck` finding).
    /// Bounded: cleared when full (at worst a few lines of a storm are shown).
    quiet_pids: HashSet<u32>,
    /// A finding's line as it is built (kept for its allocation).
    line: String,
}

impl<W: Write> Text<W> {
    pub(super) fn new(out: Out<W>) -> Self {
        Text {
            out,
            quiet_pids: HashSet::new(),
            line: String::new(),
        }
    }

    /// Whether text output leaves this event out: a user's SIGKILL and the exit events of its
    /// target (JSON carries every event).
    fn quiet(&mut self, ev: &Event) -> bool {
        let pid = ev.subject().process_or_thread();
        match events::text_quiet(ev) {
            Quiet::UserKill => {
                if self.quiet_pids.len() >= MAX_QUIET_PIDS {
                    self.quiet_pids.clear();
                }
                self.quiet_pids.insert(pid);
                true
            }
            Quiet::IfUserKilled => self.quiet_pids.contains(&pid),
            Quiet::LastIfUserKilled => self.quiet_pids.remove(&pid),
            Quiet::Always => true,
            Quiet::Never => false,
        }
    }

    /// A finding at its wall time, with its memcg (and so its workload; its path live or last
    /// seen, and whether it was removed) and, for a victim flagged live, what /proc says of it.
    /// Written into the reused `line` and from there to the output: no string of its own per
    /// line or per field (a replay writes three findings per kill).
    fn finding_lines(&mut self, f: &Finding, cx: &FindingCx<'_>) {
        let line = &mut self.line;
        line.clear();
        push_time_of_day(line, cx.wall_ns);
        line.push(' ');
        f.push_text(line);
        let gone = if cx.memcg.removed() { ", removed" } else { "" };
        // Writing into a String cannot fail.
        let _ = match (cx.memcg.path(), f.memcg_id()) {
            (Some(p), _) => match workload::of_path(p) {
                workload::Workload::Cgroup { .. } => write!(line, " [memcg {p}{gone}]"),
                w => write!(line, " [memcg {p}{gone}; {w}]"),
            },
            (None, Some(id)) if cx.memcg.removed() => {
                write!(line, " [memcg id {id}, removed before it was named]")
            }
            _ => Ok(()),
        };
        self.out.write(&printable(line));
        self.out.write("\n");
        if let Finding::Killed { victim } | Finding::Marked { victim } = f {
            for why in victim.why_lines() {
                self.out.write("    ");
                self.out.write(&printable(&why));
                self.out.write("\n");
            }
        }
        if let Some(fx) = &cx.shown {
            self.out.write(&fx.to_string());
        }
    }
}

impl<W: Write> Sink for Text<W> {
    /// Written straight to the output (the per-event path: no line is built twice).
    fn event(&mut self, ev: &Event, cx: &mut EventCx<'_>) {
        let quiet = self.quiet(ev);
        if cx.shown && !quiet {
            self.out
                .kept(|w| writeln!(w, "{}", printable(&cx.renderer.text(ev))));
        }
    }

    fn finding(&mut self, f: &Finding, cx: &mut FindingCx<'_>) {
        // A non-OOM kill that went as it should is left out.
        if f.quiet_in_text() {
            return;
        }
        cx.show_forensics(f);
        self.finding_lines(f, cx);
    }

    fn said(&mut self, s: &Said) {
        self.out.write(&format!(
            "UNSTICK pid {} ({}): {}\n",
            s.tgid,
            s.result,
            printable(&s.text)
        ));
    }

    fn note(&mut self, n: &Note<'_>) {
        let s = match *n {
            Note::Lost { new, total } => format!(
                "WARNING: {new} events lost (ring buffer full; {total} in all): findings about \
                 victims killed since are unconfirmed\n"
            ),
            Note::Reconcile {
                memcg_path,
                kernel,
                mine,
            } => {
                let verdict = if kernel == mine {
                    "agree"
                } else {
                    "DIFFER (events lost, a kill before oomtrace attached, or a kill oomtrace \
                     cannot see on this kernel)"
                };
                format!(
                    "reconcile: memcg {}: the kernel counted {kernel} OOM kill(s) while oomtrace \
                     watched, oomtrace {mine}: {verdict}\n",
                    printable(memcg_path)
                )
            }
            // Summary's Display ends its own line.
            Note::Summary(s) => format!("summary: {s}"),
            Note::Stats(v) => format!("{v}\n"),
            Note::Replay { header: None, .. } => String::new(),
            Note::Replay {
                header: Some(h),
                timeout_ns,
                death_at_last_exit,
                ..
            } => {
                let mut s = format!(
                    "replaying a dump of oomtrace {} on {} (Linux {}), judged with a {:.2} s \
                     timeout\n",
                    printable(&h.version),
                    printable(&h.hostname),
                    printable(&h.kernel),
                    timeout_ns as f64 / 1e9
                );
                if death_at_last_exit {
                    s += "note: this dump predates dump format 2: it has no record of victims \
                          finishing their exit, so death is taken at the last thread entering \
                          exit, which calls a victim stuck inside do_exit (closing files, \
                          dropping its mm) dead\n";
                }
                s
            }
            Note::DumpProblem(problem) => format!(
                "DUMP PROBLEM: {}; what could be read is shown\n",
                printable(problem)
            ),
        };
        self.out.write(&s);
    }

    output_methods!();
}
