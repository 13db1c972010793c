//! `--record PATH` as a sink of the live loop: every record (memcg paths and symbol names
//! before the events that name them, the events as read, lost-event counts, each tick after a
//! full read of the ring) goes to the dump;
//! it is flushed on every wake and, every [`SYNC_EVERY`] when it grew, given the summary so far
//! and synced to disk (a crash loses at most that much). A failure (ENOSPC) stops recording,
//! not watching at once: everything written before stays readable, and the loop ends with a
//! summary.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{
    lifecycle::Summary,
    record::dump,
    sink::{Record, Sink},
};

/// A dump written to is synced to disk at most this long after the last sync.
const SYNC_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct Recorder {
    /// `None` once closed, or once writing failed.
    writer: Option<dump::Writer>,
    path: PathBuf,
    /// Why recording stopped (a full disk).
    error: Option<String>,
    /// When the dump was last synced to disk, and its size then.
    last_sync: (tokio::time::Instant, u64),
}

impl Recorder {
    pub(crate) fn new(writer: dump::Writer, path: PathBuf) -> Recorder {
        Recorder {
            writer: Some(writer),
            path,
            error: None,
            last_sync: (tokio::time::Instant::now(), 0),
        }
    }

    fn write(&mut self, write: impl FnOnce(&mut dump::Writer) -> std::io::Result<()>) {
        let Some(d) = &mut self.writer else {
            return;
        };
        if let Err(e) = write(d) {
            let msg = format!(
                "writing the dump {} failed: {e}; recording stopped (what was written before is \
                 readable with `oomtrace report`)",
                self.path.display()
            );
            eprintln!("oomtrace: {msg}");
            self.writer = None;
            self.error = Some(msg);
        }
    }
}

impl Sink for Recorder {
    fn record(&mut self, r: &Record<'_>) {
        match *r {
            Record::Memcg(id, path) => self.write(|d| d.memcg(id, path)),
            Record::Symbol(addr, name) => self.write(|d| d.symbol(addr, name)),
            Record::Event(raw) => self.write(|d| d.event(raw)),
            Record::Lost(total) => self.write(|d| d.lost(total)),
            Record::Drained(now) => self.write(|d| d.drained(now)),
        }
    }

    fn sync(&mut self, summary: &dyn Fn() -> Value) {
        let (last_sync, synced_bytes) = self.last_sync;
        // Only when it is written: its percentiles scan the histograms (made on every tick
        // without a dump, that was 5 % of oomtrace's CPU in an OOM storm).
        let due = last_sync.elapsed() >= SYNC_EVERY
            && self
                .writer
                .as_ref()
                .is_some_and(|d| d.bytes() > synced_bytes);
        let summary = due.then(summary);
        let mut synced = None;
        self.write(|d| {
            d.flush()?;
            if let Some(summary) = &summary
                && d.bytes() > synced_bytes
            {
                d.summary(summary)?;
                d.sync()?;
                synced = Some((tokio::time::Instant::now(), d.bytes()));
            }
            Ok(())
        });
        if let Some(s) = synced {
            self.last_sync = s;
        }
    }

    fn wake_at(&self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        let (last_sync, synced_bytes) = self.last_sync;
        self.writer
            .as_ref()
            .filter(|d| d.bytes() > synced_bytes)
            .map(|_| (last_sync + SYNC_EVERY).max(now))
    }

    fn close(&mut self, summary: &Summary, end_ns: u64) -> anyhow::Result<()> {
        self.write(|d| d.summary(&json!(summary)));
        if let Some(d) = self.writer.take() {
            d.finish(end_ns)
                .with_context(|| format!("closing the dump {}", self.path.display()))?;
        }
        Ok(())
    }

    fn stopped(&self) -> Option<&str> {
        self.error.as_deref()
    }
}
