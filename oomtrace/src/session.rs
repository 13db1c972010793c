//! One watching (or replaying) session: every event is printed and fed to the tracker; the
//! tracker's findings are printed, with /proc forensics for victims flagged while live.

use std::{
    io::{self, Write},
    path::PathBuf,
};

use serde_json::{Value, json};

use crate::{
    event::Event,
    forensics,
    output::{Renderer, clock_ns, rfc3339, time_of_day},
    tracker::{Finding, Summary, Tracker},
};

/// Where forensics come from: the live system, or nowhere (replays).
pub struct Live {
    pub proc_root: PathBuf,
    pub memcg_root: Option<PathBuf>,
}

pub struct Session<W: Write> {
    pub renderer: Renderer,
    pub tracker: Tracker,
    pub json: bool,
    /// Print every event, not only findings.
    pub events: bool,
    pub live: Option<Live>,
    pub out: W,
    /// Keep every finding in `kept` (replays).
    pub keep_findings: bool,
    pub kept: Vec<Finding>,
    lost_reported: u64,
    findings: Vec<Finding>,
}

impl<W: Write> Session<W> {
    pub fn new(
        renderer: Renderer,
        tracker: Tracker,
        json: bool,
        live: Option<Live>,
        out: W,
    ) -> Self {
        Session {
            renderer,
            tracker,
            json,
            events: true,
            live,
            out,
            keep_findings: false,
            kept: Vec::new(),
            lost_reported: 0,
            findings: Vec::new(),
        }
    }

    pub fn event(&mut self, ev: &Event) -> io::Result<()> {
        if self.events {
            if self.json {
                let line = self.renderer.json(ev);
                writeln!(self.out, "{line}")?;
            } else {
                let line = self.renderer.text(ev);
                writeln!(self.out, "{line}")?;
            }
        }
        let mut found = std::mem::take(&mut self.findings);
        self.tracker.on_event(ev, &mut found);
        self.emit(&mut found, ev.header.ts_ns)?;
        self.findings = found;
        Ok(())
    }

    /// Time passes: flags victims past their timeout.
    pub fn tick(&mut self, now_ns: u64) -> io::Result<()> {
        let mut found = std::mem::take(&mut self.findings);
        self.tracker.tick(now_ns, &mut found);
        self.emit(&mut found, now_ns)?;
        self.findings = found;
        self.out.flush()
    }

    /// The kernel's count of events lost to a full ring buffer.
    pub fn lost(&mut self, total: u64) -> io::Result<()> {
        if total <= self.lost_reported {
            return Ok(());
        }
        let new = total - self.lost_reported;
        self.lost_reported = total;
        self.tracker.on_lost(total);
        if self.json {
            writeln!(
                self.out,
                "{}",
                json!({"type": "lost", "events": new, "total": total})
            )
        } else {
            writeln!(
                self.out,
                "WARNING: {new} events lost (ring buffer full; {total} in all): findings about \
                 victims killed since are unconfirmed"
            )
        }
    }

    /// Ends the session: judges what is left at `now_ns` and prints the summary.
    pub fn finish(&mut self, now_ns: u64) -> io::Result<Summary> {
        let mut found = std::mem::take(&mut self.findings);
        self.tracker.finish(now_ns, &mut found);
        self.emit(&mut found, now_ns)?;
        let summary = self.tracker.summary();
        if self.json {
            writeln!(
                self.out,
                "{}",
                json!({"type": "summary", "summary": summary})
            )?;
        } else {
            write!(self.out, "summary: {summary}")?;
        }
        self.out.flush()?;
        Ok(summary)
    }

    fn emit(&mut self, found: &mut Vec<Finding>, at_ns: u64) -> io::Result<()> {
        for f in found.drain(..) {
            self.finding(&f, at_ns)?;
            if self.keep_findings {
                self.kept.push(f);
            }
        }
        Ok(())
    }

    fn finding(&mut self, f: &Finding, at_ns: u64) -> io::Result<()> {
        let victim = match f {
            Finding::Stuck { victim, .. } | Finding::NotReleased { victim, .. } => Some(victim),
            _ => None,
        };
        let forensics = match (victim, &self.live) {
            (Some(v), Some(live)) => Some(forensics::collect(
                &live.proc_root,
                v.key.tgid,
                live.memcg_root.as_deref(),
            )),
            _ => None,
        };
        let wall = self.renderer.clock.wall_ns(f.at_ns().unwrap_or(at_ns));
        let memcg_path = f.memcg_id().and_then(|id| self.renderer.memcgs.path(id));
        if self.json {
            let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("type".into(), "finding".into());
                m.insert("time".into(), rfc3339(wall).into());
                m.insert("memcg_path".into(), memcg_path.into());
                if let Some(fx) = &forensics {
                    m.insert(
                        "forensics".into(),
                        serde_json::to_value(fx).unwrap_or(Value::Null),
                    );
                }
            }
            writeln!(self.out, "{v}")?;
        } else {
            let memcg = memcg_path.map_or(String::new(), |p| format!(" [memcg {p}]"));
            writeln!(self.out, "{} {f}{memcg}", time_of_day(wall))?;
            if let Some(fx) = &forensics {
                write!(self.out, "{fx}")?;
            }
        }
        Ok(())
    }
}

/// CLOCK_MONOTONIC now, the clock of kernel timestamps.
pub fn monotonic_now() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}
