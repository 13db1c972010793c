//! The `--on-stuck` hook as a sink of the live loop: the command runs once per flagged
//! victim, details in its environment (never through a shell), in the background; children
//! are reaped on the loop's wakes and given a grace at exit.

use std::time::Duration;

use serde_json::Value;

use crate::{
    hooks::Hooks,
    lifecycle::Finding,
    sink::{FindingCx, Sink},
};

/// How long hooks still running when oomtrace ends may take before they are killed.
const HOOK_GRACE_AT_EXIT: Duration = Duration::from_secs(2);

impl Sink for Hooks {
    fn finding(&mut self, f: &Finding, cx: &mut FindingCx<'_>) {
        // Both kinds: `stuck` (an OOM victim) and `kill_stuck` (another sender's).
        let Some((victim, stage, since_kill_ns)) = f.stuck() else {
            return;
        };
        let since_kill_ns = &since_kill_ns;
        let Some(live) = cx.live else {
            return;
        };
        let collected;
        let fx = match &cx.shown {
            Some(fx) => fx,
            None => {
                collected = live.forensics(victim.key.tgid, victim.key.start_ns);
                &collected
            }
        };
        let mut detail = serde_json::to_value(f).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut detail {
            m.insert(
                "forensics".into(),
                serde_json::to_value(fx).unwrap_or(Value::Null),
            );
        }
        let sender = victim.sender.as_ref();
        let vars = [
            ("OOMTRACE_FINDING", f.name().to_string()),
            (
                "OOMTRACE_SENDER_KIND",
                victim.sender_kind().name().to_string(),
            ),
            (
                "OOMTRACE_SENDER_PID",
                sender.map(|s| s.tgid.to_string()).unwrap_or_default(),
            ),
            (
                "OOMTRACE_SENDER_COMM",
                sender.map(|s| s.comm.to_string()).unwrap_or_default(),
            ),
            ("OOMTRACE_PID", victim.key.tgid.to_string()),
            ("OOMTRACE_COMM", victim.comm.to_string()),
            (
                "OOMTRACE_MEMCG",
                cx.memcg.path().unwrap_or_default().to_string(),
            ),
            (
                "OOMTRACE_MEMCG_ID",
                victim.memcg_id.unwrap_or(0).to_string(),
            ),
            ("OOMTRACE_STAGE", format!("{stage:?}")),
            ("OOMTRACE_STAGE_TEXT", stage.to_string()),
            (
                "OOMTRACE_SINCE_KILL_SECONDS",
                format!("{:.3}", *since_kill_ns as f64 / 1e9),
            ),
            ("OOMTRACE_STATE", fx.state.clone().unwrap_or_default()),
            (
                "OOMTRACE_PPID",
                fx.ppid.map(|p| p.to_string()).unwrap_or_default(),
            ),
            ("OOMTRACE_JSON", detail.to_string()),
        ];
        self.run(&vars);
    }

    fn tick(&mut self) {
        self.reap();
    }

    fn busy(&self) -> bool {
        !self.is_empty()
    }

    fn close(&mut self, _summary: &crate::lifecycle::Summary, _end_ns: u64) -> anyhow::Result<()> {
        self.shutdown(HOOK_GRACE_AT_EXIT);
        Ok(())
    }
}
