use super::*;
use crate::lifecycle::Finding;

#[test]
fn filters_that_match_nothing_are_said() {
    let dir = crate::scratch::ScratchDir::new("filters");
    std::fs::create_dir_all(dir.path().join("memcg/system.slice")).unwrap();
    std::fs::create_dir_all(dir.path().join("proc/42")).unwrap();
    let (memcg, proc_root) = (dir.path().join("memcg"), dir.path().join("proc"));
    let f = |memcg: Option<&str>, pid| Filter {
        memcg: memcg.map(str::to_string),
        pid,
    };
    let ok = f(Some("/system.slice"), Some(42));
    assert!(filter_warnings(&ok, Some(&memcg), &proc_root).is_empty());
    let bad = f(Some("/sytem.slice"), Some(43));
    let w = filter_warnings(&bad, Some(&memcg), &proc_root);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("no such memcg") && w[1].contains("no such process"),
        "{w:?}"
    );
    let w = filter_warnings(&ok, None, &proc_root);
    assert!(w[0].contains("no memory controller"), "{w:?}");
}

/// What a fake sink was handed, in order, shared with the test (the runner owns the sinks).
type Log = std::rc::Rc<std::cell::RefCell<Vec<String>>>;

/// A sink that writes down every call; on a flagged victim it says a remedy, as `--unstick`.
struct Fake {
    name: &'static str,
    log: Log,
    says_on_stuck: bool,
}

impl Sink for Fake {
    fn event(&mut self, ev: &Event, cx: &mut EventCx<'_>) {
        self.log.borrow_mut().push(format!(
            "{} event {:?} {}",
            self.name,
            ev.kind(),
            cx.memcg.unwrap_or("-")
        ));
    }

    fn finding(&mut self, f: &Finding, cx: &mut FindingCx<'_>) {
        self.log.borrow_mut().push(format!(
            "{} finding {} {}",
            self.name,
            f.name(),
            cx.memcg.path().unwrap_or("-")
        ));
        if self.says_on_stuck
            && let Some((v, _, _)) = f.stuck()
        {
            cx.said.push(Said {
                tgid: v.key.tgid,
                result: "refused",
                text: "waits on nothing known".into(),
                wait_kind: Some("unknown".into()),
            });
        }
    }

    fn said(&mut self, s: &Said) {
        self.log
            .borrow_mut()
            .push(format!("{} said {} {}", self.name, s.tgid, s.result));
    }

    fn tick(&mut self) {
        self.log.borrow_mut().push(format!("{} tick", self.name));
    }
}

/// The printer's output, shared with the test (the runner owns the printer).
#[derive(Clone, Default)]
struct Shared(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.borrow().clone()).unwrap()
    }
}

/// A session as the tests drive one, with a memcg named.
fn session() -> Session {
    let mut session = Session::in_memory(MemcgPaths::new(None));
    session.memcgs().insert(5_000, "/kube/pod-a".into());
    session
}

/// A runner (no /proc, no kernel) with the text printer into a buffer, then two fake sinks.
fn runner_with_fakes(log: &Log) -> (Runner, Shared) {
    let out = Shared::default();
    let sinks: Vec<Box<dyn Sink>> = vec![
        printer::printer(Format::Text, out.clone()),
        Box::new(Fake {
            name: "first",
            log: log.clone(),
            says_on_stuck: false,
        }),
        Box::new(Fake {
            name: "second",
            log: log.clone(),
            says_on_stuck: true,
        }),
    ];
    let runner = Runner::new(session(), sinks, crate::kernel::kallsyms::Kallsyms::open());
    (runner, out)
}

/// The live loop only decodes and dispatches: each event and each finding reaches every sink,
/// in the order they were registered, with the memcg's path; the printer, registered first,
/// writes it.
#[test]
fn every_event_and_finding_reaches_each_sink_in_order() {
    let log = Log::default();
    let (mut runner, out) = runner_with_fakes(&log);
    let events: Vec<Event> = crate::record::synth::episodes(1, 1).collect();
    for ev in &events {
        runner.userspace(ev).unwrap();
    }
    // Past the reorder window, before any timeout.
    runner
        .judge(events.last().unwrap().header.ts_ns + 1_000_000_000, true)
        .unwrap();
    let log = log.borrow();
    let of = |name: &str, what: &str| -> Vec<String> {
        log.iter()
            .filter(|l| l.starts_with(&format!("{name} {what}")))
            .cloned()
            .collect()
    };
    assert_eq!(of("first", "event").len(), events.len(), "{log:#?}");
    assert_eq!(of("second", "event").len(), events.len(), "{log:#?}");
    assert_eq!(
        of("first", "event")[0],
        "first event OomInvoke /kube/pod-a",
        "{log:#?}"
    );
    let findings = of("first", "finding");
    assert!(
        findings
            .iter()
            .any(|l| l.starts_with("first finding killed /kube/pod-a")),
        "{log:#?}"
    );
    assert!(
        findings.iter().any(|l| l.starts_with("first finding dead")),
        "{log:#?}"
    );
    // The same findings, in the same order, to the second sink; each finding reaches the
    // first sink before the second.
    let second: Vec<String> = of("second", "finding")
        .iter()
        .map(|l| l.replacen("second", "first", 1))
        .collect();
    assert_eq!(findings, second);
    for f in &findings {
        let i = log.iter().position(|l| l == f).unwrap();
        assert_eq!(log[i + 1], f.replacen("first", "second", 1), "{log:#?}");
    }
    assert_eq!(runner.flagged, 0);
    let out = out.text();
    assert!(out.contains("KILLED pid 100000 (victim)"), "{out}");
}

/// A victim past its timeout is flagged once; what a sink says about it (a remedy) is written
/// in the session's format and counted by every sink, after all had the finding.
#[test]
fn a_flagged_victim_reaches_the_sinks_and_what_they_say_is_written_and_counted() {
    let log = Log::default();
    let (mut runner, out) = runner_with_fakes(&log);
    // The kill and one thread's exit, without the last thread's exit or the release.
    let events: Vec<Event> = crate::record::synth::episodes(1, 2)
        .filter(|ev| match ev.payload {
            Payload::TaskExit(p) => p.group_dead == 0,
            Payload::TaskFree(_) => false,
            _ => true,
        })
        .collect();
    let last = events.last().unwrap().header.ts_ns;
    for ev in &events {
        runner.userspace(ev).unwrap();
    }
    // Announced after the reorder window, flagged once past the timeout.
    runner.judge(last + 1_000_000_000, true).unwrap();
    runner
        .judge(
            last + TrackerConfig::default().timeout_ns + 2_000_000_000,
            true,
        )
        .unwrap();
    assert_eq!(runner.flagged, 1, "{}\n{:#?}", out.text(), log.borrow());
    let log = log.borrow();
    let stuck = log
        .iter()
        .position(|l| l == "first finding stuck /kube/pod-a")
        .unwrap_or_else(|| panic!("{log:#?}"));
    assert_eq!(
        &log[stuck..stuck + 5],
        [
            "first finding stuck /kube/pod-a",
            "second finding stuck /kube/pod-a",
            "first said 100000 refused",
            "second said 100000 refused",
            "first tick",
        ],
        "{log:#?}"
    );
    let out = out.text();
    let line = "UNSTICK pid 100000 (refused): waits on nothing known\n";
    assert!(out.ends_with(line), "{out}");
}

/// The dump is a sink like the others: it gets each memcg's path once before the first event
/// naming it, every event as read, the lost count, and at the close the summary and the end.
#[test]
fn the_dump_records_what_the_loop_reads_and_closes_with_the_summary() {
    let scratch = crate::scratch::ScratchDir::new("live-recorder");
    let path = scratch.join("watch.dump");
    let header = json!({"version": "t", "hostname": "h", "kernel": "k",
                        "options": {"timeout_ns": 5_000_000_000u64},
                        "clock": {"realtime_offset_ns": 0}});
    let writer = dump::Writer::create(&path, false, &header).unwrap();
    let sinks: Vec<Box<dyn Sink>> = vec![Box::new(recorder::Recorder::new(writer, path.clone()))];
    let mut runner = Runner::new(session(), sinks, crate::kernel::kallsyms::Kallsyms::open());
    let events: Vec<Event> = crate::record::synth::episodes(2, 1).collect();
    for ev in &events {
        runner.userspace(ev).unwrap();
    }
    runner.lost(3).unwrap();
    let end = events.last().unwrap().header.ts_ns + 1;
    let summary = runner.session.finish(end, &mut Vec::new());
    for sink in &mut runner.sinks {
        sink.close(&summary, end).unwrap();
    }
    assert_eq!(runner.stopped(), None);
    let mut reader = dump::Reader::open(&path).unwrap();
    let mut records = Vec::new();
    while let Some(r) = reader.next_record() {
        records.push(r);
    }
    let recorded: Vec<Event> = records
        .iter()
        .filter_map(|r| match r {
            dump::Record::Event(raw) => Some(Event::decode(raw).unwrap()),
            _ => None,
        })
        .collect();
    // As read: the same events (synth leaves the header's kind 0; encoding sets it).
    let same = |evs: &[Event]| -> Vec<(u64, Payload)> {
        evs.iter().map(|e| (e.header.ts_ns, e.payload)).collect()
    };
    assert_eq!(same(&recorded), same(&events));
    assert!(recorded.iter().all(|e| e.header.kind == e.kind() as u32));
    let memcgs: Vec<(usize, &dump::Record)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, dump::Record::Memcg(..)))
        .collect();
    assert_eq!(memcgs.len(), 1, "{records:?}");
    assert!(
        matches!(memcgs[0], (0, dump::Record::Memcg(5_000, p)) if p == "/kube/pod-a"),
        "{records:?}"
    );
    assert!(records.iter().any(|r| matches!(r, dump::Record::Lost(3))));
    assert!(
        matches!(&records[records.len() - 2], dump::Record::Summary(s) if s["kills"] == 2),
        "{records:?}"
    );
    assert!(matches!(records.last(), Some(dump::Record::End(e)) if *e == end));
}

#[test]
fn tick_deadlines_share_a_grid_and_never_come_early() {
    // Deadlines within one grid step share a wake-up, none is moved earlier, and none later
    // than a step.
    let step = TICK_GRID_NS;
    for due in [1, step - 1, step, step + 1, 7 * step + 3] {
        let at = on_grid(due);
        assert!(at >= due && at - due < step, "{due} → {at}");
        assert_eq!(at % step, 0, "{due} → {at}");
    }
    assert_eq!(on_grid(step + 1), on_grid(2 * step - 1));
    // A deadline at the end of time stays there (no wrap to an early wake).
    assert_eq!(on_grid(u64::MAX), u64::MAX);
}

/// A deadline of the tracker (here a held event's end of reorder window) is met by any wake
/// past it, and else by a tick armed after it, at most one grid step late once the timer has
/// rounded it to its own grid; never before it.
#[test]
fn a_deadline_is_met_by_a_wake_past_it_or_a_tick_at_most_a_step_after() {
    let log = Log::default();
    let (mut runner, _out) = runner_with_fakes(&log);
    let mut ev = crate::record::synth::episodes(1, 1)
        .next()
        .expect("an event");
    ev.header.ts_ns = monotonic_now();
    runner.userspace(&ev).unwrap();
    let due = runner
        .session
        .tracker()
        .next_tick_due()
        .expect("the event is held for its reorder window");
    assert!(!runner.tick_due_by(due - 1));
    assert!(runner.tick_due_by(due));
    let wake = runner.next_wake();
    assert!(wake > due, "{wake} {due}");
    let fires = ticker::on_wake_grid(wake);
    assert!(fires <= due + TICK_GRID_NS, "{fires} {due}");
}

/// A classic mark (a thread id only) gets its process from /proc; a kill decision's and a
/// SIGKILL's kernel addresses are hashed, equal ones alike, zero left alone; a kind that
/// carries neither is unchanged.
#[test]
fn tgids_are_filled_and_kernel_addresses_hidden_before_anything_reads_an_event() {
    use oomtrace_common::{KernelSigkill, MarkVictim, OomInvoke, OomKill};
    let key = std::collections::hash_map::RandomState::new();
    let me = std::process::id();
    let ev = |payload| Event {
        // SAFETY: a plain-data header; all zeroes is a valid value.
        header: unsafe { std::mem::zeroed() },
        payload,
    };
    // SAFETY (each `zeroed`): plain-data payloads, valid as all zeroes.
    let mut mark: MarkVictim = unsafe { std::mem::zeroed() };
    mark.pid = me;
    mark.mm = 0xffff_8880_1234_5000;
    let mut e = ev(Payload::MarkVictim(mark));
    assert!(complete_in_userspace(&mut e, &key));
    let Payload::MarkVictim(m) = e.payload else {
        unreachable!()
    };
    assert_eq!(m.tgid, me);
    assert_ne!(m.fields & crate::event::victim_fields::TGID_FROM_PROC, 0);
    assert_ne!(m.mm, mark.mm);
    let mut kill: OomKill = unsafe { std::mem::zeroed() };
    kill.chosen_mm = mark.mm;
    let mut e = ev(Payload::OomKill(kill));
    assert!(complete_in_userspace(&mut e, &key));
    assert!(matches!(e.payload, Payload::OomKill(k) if k.chosen_mm == m.mm));
    // Its tgid known and no address: nothing to do.
    let mut sig: KernelSigkill = unsafe { std::mem::zeroed() };
    (sig.target_pid, sig.target_tgid) = (me, me);
    let mut e = ev(Payload::KernelSigkill(sig));
    assert!(!complete_in_userspace(&mut e, &key));
    assert_eq!(e.payload, Payload::KernelSigkill(sig));
    sig.target_tgid = 0;
    let mut e = ev(Payload::KernelSigkill(sig));
    assert!(complete_in_userspace(&mut e, &key));
    assert!(matches!(e.payload, Payload::KernelSigkill(k) if k.target_tgid == me));
    let invoke: OomInvoke = unsafe { std::mem::zeroed() };
    let mut e = ev(Payload::OomInvoke(invoke));
    assert!(!complete_in_userspace(&mut e, &key));
    assert_eq!(e.payload, Payload::OomInvoke(invoke));
}

/// A release is looked for once the reorder window after the death has passed, then at least
/// `POLL` apart and ever less often: a release that never comes costs a few wakes before the
/// sweep (2 s), not one every `POLL`.
#[test]
fn a_release_awaited_is_polled_less_and_less_often() {
    let dead = 1_000 * TICK_GRID_NS;
    // Before the window's end: at it, on the grid.
    assert_eq!(
        release_poll(dead, dead + 1),
        on_grid(dead + RELEASE_WAIT_NS)
    );
    let mut now = dead + RELEASE_WAIT_NS;
    let mut wakes = 0;
    let mut gaps = Vec::new();
    while now < dead + SWEEP_EVERY.as_nanos() as u64 {
        let next = release_poll(dead, now);
        assert!(next >= now + POLL.as_nanos() as u64, "{now} -> {next}");
        assert_eq!(next % TICK_GRID_NS, 0);
        gaps.push(next - now);
        now = next;
        wakes += 1;
    }
    assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
    // Every POLL it was 2 s / 50 ms = 40 wakes.
    assert!(wakes <= 10, "{wakes} wakes: {gaps:?}");
}

/// The sweep takes a process out of the kernel's tracked set only once it was gone from /proc
/// at two sweeps in a row: one reaped just before a sweep keeps its release event (which the
/// kernel reports milliseconds after the process leaves /proc).
#[test]
fn the_sweep_leaves_a_just_reaped_process_tracked_for_its_release() {
    let mut gone_before = std::collections::HashSet::new();
    // Sweep 1: 7 was just reaped, 8 lives.
    let mut gone_now = std::collections::HashSet::new();
    assert!(!stale_tracked(7, true, &gone_before, &mut gone_now));
    assert!(!stale_tracked(8, false, &gone_before, &mut gone_now));
    gone_before = gone_now;
    // Sweep 2: 7 is still in the set (its release was never applied): out now; 8 is gone
    // now for the first time.
    let mut gone_now = std::collections::HashSet::new();
    assert!(stale_tracked(7, true, &gone_before, &mut gone_now));
    assert!(!stale_tracked(8, true, &gone_before, &mut gone_now));
    gone_before = gone_now;
    // Sweep 3: 8's pid names a live process again (reused): it stays.
    let mut gone_now = std::collections::HashSet::new();
    assert!(!stale_tracked(8, false, &gone_before, &mut gone_now));
    assert!(gone_now.is_empty());
}
