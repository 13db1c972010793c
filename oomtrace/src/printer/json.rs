//! JSON Lines for machines: one object per line, its `type` first (docs/json.md).

mod commands;

use std::io::Write;

use serde_json::{Value, json};

use super::Out;
use crate::{
    clock::rfc3339,
    event::Event,
    lifecycle::Finding,
    render::json_sorted,
    sink::{EventCx, FindingCx, Note, Said, Sink},
    workload,
};

/// The JSON printer.
pub(crate) struct Json<W> {
    out: Out<W>,
    /// A finding's line, written here and then to `out` (one buffer, kept).
    line: Vec<u8>,
}

impl<W: Write> Json<W> {
    pub(super) fn new(out: Out<W>) -> Self {
        Json {
            out,
            line: Vec::with_capacity(4096),
        }
    }
}

/// A finding's object, its keys sorted ([`json_sorted`]): the finding's own fields, then
/// those said here (which win over a field of the finding's with the same name).
fn finding_line(line: &mut Vec<u8>, f: &Finding, cx: &FindingCx<'_>) -> json_sorted::Result<()> {
    let memcg_path = cx.memcg.path();
    let mut o = json_sorted::Object::new(line);
    o.merge(f)?;
    o.field("type", "finding")?;
    o.field("time", &rfc3339(cx.wall_ns))?;
    o.field("workload", &memcg_path.map(workload::of_path))?;
    o.field("memcg_path", &memcg_path)?;
    o.field("memcg_removed", &cx.memcg.removed())?;
    if let Some(fx) = &cx.shown {
        o.field("forensics", fx)?;
    }
    o.finish();
    Ok(())
}

/// [`finding_line`] through `serde_json::Value`, as it was written before (the same bytes:
/// the golden files, `json_sorted`'s tests): the line of a finding that [`finding_line`]
/// cannot write.
fn finding_value(f: &Finding, cx: &FindingCx<'_>) -> String {
    let memcg_path = cx.memcg.path().map(str::to_string);
    let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("type".into(), "finding".into());
        m.insert("time".into(), rfc3339(cx.wall_ns).into());
        m.insert(
            "workload".into(),
            memcg_path
                .as_deref()
                .map(|p| serde_json::to_value(workload::of_path(p)))
                .and_then(Result::ok)
                .unwrap_or(Value::Null),
        );
        m.insert("memcg_path".into(), memcg_path.into());
        m.insert("memcg_removed".into(), cx.memcg.removed().into());
        if let Some(fx) = &cx.shown {
            m.insert(
                "forensics".into(),
                serde_json::to_value(fx).unwrap_or(Value::Null),
            );
        }
    }
    v.to_string()
}

impl<W: Write> Sink for Json<W> {
    /// Written straight to the output (the per-event path: no line is built twice).
    fn event(&mut self, ev: &Event, cx: &mut EventCx<'_>) {
        if cx.shown {
            self.out.kept(|w| writeln!(w, "{}", cx.renderer.json(ev)));
        }
    }

    /// A finding at its wall time, with its memcg (and so its workload; its path live or last
    /// seen, and whether it was removed) and, for a victim flagged live, what /proc says of it.
    fn finding(&mut self, f: &Finding, cx: &mut FindingCx<'_>) {
        cx.show_forensics(f);
        self.line.clear();
        if finding_line(&mut self.line, f, cx).is_err() {
            self.line.clear();
            self.line.extend_from_slice(finding_value(f, cx).as_bytes());
        }
        self.line.push(b'\n');
        let line = &self.line;
        self.out.kept(|w| w.write_all(line));
    }

    fn said(&mut self, s: &Said) {
        let v = json!({"type": "unstick", "pid": s.tgid, "result": s.result, "detail": s.text});
        self.out.write(&format!("{v}\n"));
    }

    fn note(&mut self, n: &Note<'_>) {
        let v = match *n {
            Note::Lost { new, total } => json!({"type": "lost", "events": new, "total": total}),
            Note::Reconcile {
                memcg_path,
                kernel,
                mine,
            } => json!({"type": "reconcile", "memcg_path": memcg_path, "kernel_oom_kills": kernel,
                        "oomtrace_kills": mine, "agree": kernel == mine}),
            Note::Summary(s) => json!({"type": "summary", "summary": s}),
            Note::Stats(v) => v.clone(),
            Note::Replay {
                raw, timeout_ns, ..
            } => json!({"type": "replay", "header": raw, "timeout_ns": timeout_ns}),
            Note::DumpProblem(problem) => json!({"type": "dump_problem", "problem": problem}),
        };
        self.out.write(&format!("{v}\n"));
    }

    output_methods!();
}
