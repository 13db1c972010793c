//! `report --perfetto`: a replay drawn as a Chrome trace-event timeline.

use std::{collections::BTreeMap, path::Path};

use serde_json::{Value, json};

use super::Replay;

/// The replay as Chrome trace-event JSON (opens in ui.perfetto.dev): one process per memcg,
/// one thread per victim, a slice from kill to death (red past the timeout), the zombie's wait,
/// and instants for OOM invocations, the signal, the mark, the reaper and each thread's exit.
pub fn perfetto(r: &Replay, timeout_ns: u64) -> Value {
    let us = |ns: u64| ns as f64 / 1000.0;
    let mut ev: Vec<Value> = Vec::new();
    let mut memcgs: BTreeMap<u64, ()> = BTreeMap::new();
    let memcg_name = |id: u64| match r.memcg_paths.get(&id) {
        Some(p) => format!("memcg {p}"),
        None if id == 0 => "memcg unknown".into(),
        None => format!("memcg id {id}"),
    };
    for &(memcg, ts) in &r.invocations {
        memcgs.insert(memcg, ());
        ev.push(
            json!({"ph": "i", "s": "t", "name": "OOM invoked", "cat": "oom",
                       "pid": memcg, "tid": 0, "ts": us(ts)}),
        );
    }
    let end = r
        .victims
        .values()
        .filter_map(|v| v.timeline.released.or(v.timeline.dead))
        .chain(r.exits.iter().map(|e| e.2))
        .max()
        .unwrap_or(0);
    for v in r.victims.values() {
        let Some(kill) = v.killed_at() else { continue };
        let pid = v.memcg_id.unwrap_or(0);
        let tid = v.key.tgid;
        memcgs.insert(pid, ());
        ev.push(
            json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                       "args": {"name": format!("victim {} ({})", v.key.tgid, v.comm)}}),
        );
        let t = &v.timeline;
        // Timestamps from a dump may be in any order (clock trouble, damage): durations
        // saturate at 0 instead of underflowing.
        let dead = t.dead.unwrap_or(end.max(kill));
        ev.push(
            json!({"ph": "X", "name": "killed → dead", "cat": "victim", "pid": pid, "tid": tid,
                       "ts": us(kill), "dur": us(dead.saturating_sub(kill)),
                       "args": {"stage": v.stage(), "dead": t.dead.is_some(),
                                "why": v.why_lines(), "incident": v.incident}}),
        );
        if dead.saturating_sub(kill) >= timeout_ns {
            let from = kill.saturating_add(timeout_ns);
            ev.push(
                json!({"ph": "X", "name": "STUCK (past the timeout)", "cat": "stuck",
                           "cname": "terrible", "pid": pid, "tid": tid,
                           "ts": us(from), "dur": us(dead.saturating_sub(from))}),
            );
        }
        if let Some(d) = t.dead {
            let released = t.released.unwrap_or(end.max(d));
            ev.push(
                json!({"ph": "X", "name": "zombie until released", "cat": "victim",
                           "pid": pid, "tid": tid, "ts": us(d), "dur": us(released.saturating_sub(d))}),
            );
        }
        let marks = [
            ("chosen", t.chosen),
            ("SIGKILL", t.sigkill),
            ("marked", t.marked),
            ("oom_reaper woken", t.reaper_woken),
            ("reaping started", t.reaping_started),
            ("reaping finished", t.reaping_finished),
            ("oom_reaper gave up", t.reaper_gave_up),
            ("dead", t.dead),
            ("released", t.released),
        ];
        for (name, at) in marks {
            if let Some(at) = at {
                ev.push(json!({"ph": "i", "s": "t", "name": name, "cat": "victim",
                               "pid": pid, "tid": tid, "ts": us(at)}));
            }
        }
        for &(_, thread, at) in r.exits.iter().filter(|e| e.0 == v.key.tgid && e.2 >= kill) {
            ev.push(
                json!({"ph": "i", "s": "t", "name": format!("thread {thread} exited"),
                           "cat": "exit", "pid": pid, "tid": tid, "ts": us(at)}),
            );
        }
    }
    for &id in memcgs.keys() {
        ev.push(json!({"ph": "M", "name": "process_name", "pid": id,
                       "args": {"name": memcg_name(id)}}));
        ev.push(
            json!({"ph": "M", "name": "thread_name", "pid": id, "tid": 0,
                       "args": {"name": "OOM invocations"}}),
        );
    }
    json!({"traceEvents": ev, "displayTimeUnit": "ms",
           "otherData": {"generator": "oomtrace report --perfetto"}})
}

/// Writes the Perfetto file.
pub fn write_perfetto(r: &Replay, timeout_ns: u64, path: &Path) -> anyhow::Result<()> {
    let v = perfetto(r, timeout_ns);
    let mut f = crate::record::outfile::create_new(path)?;
    std::io::Write::write_all(&mut f, &serde_json::to_vec(&v)?)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}
