//! JSON of what commands say besides events and findings: `watch`'s plan line, `check`'s
//! report and `unstick`'s result (one object each, docs/json.md).

use std::io::Write;

use serde_json::{Value, json};

use super::Json;
use crate::{
    lifecycle::PRE_EXISTING_GRACE_NS,
    printer::{Banner, CheckReport, Printer, Unstick},
};

impl<W: Write> Printer for Json<W> {
    fn banner(&mut self, b: &Banner<'_>) {
        self.out.write(&format!("{}\n", b.plan_line));
    }

    fn check(&mut self, r: &CheckReport) {
        self.out.write(&format!("{}\n", check(r)));
    }

    fn unstick(&mut self, u: &Unstick<'_>) {
        self.out.write(&format!("{}\n", unstick(u)));
    }
}

fn check(r: &CheckReport) -> Value {
    let (probes, death) = (&r.probes, &r.death);
    json!({ "environment": probes.env, "plan": probes.plan, "kill_path_observable": r.kill_path,
        "attach_ms": probes.attach_time.as_secs_f64() * 1e3,
        "death": {"pidfd": death.is_ok(), "error": death.as_ref().err()},
        "pre_existing": r.stuck.iter().map(|(c, fx)| json!({
            "pid": c.pid, "ppid": c.ppid, "comm": c.comm, "memcg_path": c.memcg_path,
            "threads": c.threads, "flags": c.flags, "forensics": fx,
            // /proc shows a pending SIGKILL, never who sent it.
            "sender_kind": "unknown",
        })).collect::<Vec<_>>(),
        "oom_now": r.oom_now.iter().zip(&r.oom_now_tasks).map(|(m, tasks)| json!({
            "memcg_path": m.path, "invocations": m.invocations, "kills": m.kills,
            "window_s": PRE_EXISTING_GRACE_NS as f64 / 1e9,
            "nothing_killable": m.kills == 0 && m.invocations.is_some_and(|n| n > 0),
            "tasks": tasks,
        })).collect::<Vec<_>>(),
        "oom_killer_disabled": r.oom_killer_disabled.iter().map(|(p, tasks)| json!({
            "memcg_path": p, "tasks": tasks,
        })).collect::<Vec<_>>() })
}

fn unstick(u: &Unstick<'_>) -> Value {
    match u {
        Unstick::Victim(v) => json!({"pid": v.pid, "oom_victim": v.evidence.as_ref().ok(),
               "evidence": match v.evidence { Ok(e) | Err(e) => e },
               "refused": v.refused, "waits_on": v.wait_on, "remedy": v.remedy,
               "applied": v.applied, "dead": v.dead, "restored": v.restored, "forensics": v.fx}),
        Unstick::OomKillerOff(k) => json!({"pid": k.pid, "oom_victim": Value::Null,
               "oom_killer_disabled": k.hang,
               "waits_on": {"kind": "oom_killer_disabled", "text": k.waits_on},
               "remedy": {"command": k.command, "risk": k.risk}, "refused": k.refused,
               "applied": k.applied.map(|(did, ended)| json!({"did": did, "ok": *ended})),
               "forensics": k.fx}),
        Unstick::OomDomain(d) => json!({"pid": d.pid, "oom_victim": Value::Null,
               "oom_domain": d.domain,
               "waits_on": {"kind": "oom_domain", "text": d.waits_on},
               "remedy": d.remedy, "refused": d.refused, "applied": d.applied,
               "after": d.after.map(|r| match r { Ok(t) | Err(t) => t }),
               "out_of_oom": d.after.map(Result::is_ok),
               "restored": d.restored, "forensics": d.fx}),
    }
}
