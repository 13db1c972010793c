//! Synthetic OOM episodes for benchmarks: realistic event streams without a kernel.

use std::collections::BTreeMap;

use oomtrace_common::{
    GroupExited, Header, KernelSigkill, MarkVictim, OomInvoke, Reaper, TaskExit, TaskFree,
    USERSPACE_CPU, exit_seen, group_dead_source, sender_state, victim_fields,
};

use crate::event::{Event, Payload, comm_bytes};

const MS: u64 = 1_000_000;

/// Events of `victims` normal OOM kills (1 ms apart, each in one of 64 memcgs): invocation,
/// SIGKILL, mark, a reaper wake every 16th kill, `threads` thread exits, release.
pub fn episodes(victims: u64, threads: u32) -> impl Iterator<Item = Event> {
    (0..victims).flat_map(move |i| {
        let t0 = 1_000_000 * MS + i * MS;
        let tgid = 100_000 + (i % 4_000_000) as u32;
        let start = 1_000 + i;
        let memcg = 5_000 + (i % 64);
        let trigger = Header {
            kind: 0,
            cpu: (i % 2) as u32,
            ts_ns: t0,
            pid: 50,
            tgid: 50,
            comm: comm_bytes("alloc"),
        };
        let at = |dt: u64, pid: u32, tgid: u32| Header {
            ts_ns: t0 + dt,
            pid,
            tgid,
            comm: comm_bytes("victim"),
            ..trigger
        };
        let mark = victim_mark(tgid, start, memcg);
        let mut evs = vec![
            Event {
                header: trigger,
                payload: Payload::OomInvoke(OomInvoke {
                    memcg_id: memcg,
                    gfp_mask: 0xcc0,
                    order: 0,
                }),
            },
            Event {
                header: Header {
                    ts_ns: t0 + 1_000,
                    ..trigger
                },
                payload: Payload::KernelSigkill(KernelSigkill {
                    target_pid: tgid,
                    target_tgid: tgid,
                    target_comm: comm_bytes("victim"),
                    target_start_ns: start,
                    group: 1,
                    result: 0,
                    target_mm: 0xffff_8880_0000_0000 + u64::from(tgid) * 4096,
                    sender_flags: sender_state::KNOWN,
                    _pad: 0,
                    ..KernelSigkill::ZERO
                }),
            },
            Event {
                header: Header {
                    ts_ns: t0 + 5_000,
                    ..trigger
                },
                payload: Payload::MarkVictim(mark),
            },
        ];
        if i % 16 == 0 {
            evs.push(Event {
                header: at(20_000, 40, 40),
                payload: Payload::WakeReaper(Reaper { pid: tgid, _pad: 0 }),
            });
        }
        for t in 0..threads {
            evs.push(Event {
                header: at(300_000 + u64::from(t) * 10_000, tgid + t, tgid),
                payload: Payload::TaskExit(TaskExit {
                    group_dead: u32::from(t + 1 == threads),
                    group_dead_source: group_dead_source::TRACEPOINT,
                    start_ns: start,
                }),
            });
        }
        evs.push(Event {
            header: at(20 * MS, 0, 0),
            payload: Payload::TaskFree(TaskFree {
                pid: tgid,
                _pad: 0,
                start_ns: start,
            }),
        });
        evs
    })
}

/// The OOM killer's mark of episode victim `tgid`, with its memory sizes.
fn victim_mark(tgid: u32, start: u64, memcg: u64) -> MarkVictim {
    MarkVictim {
        pid: tgid,
        tgid,
        comm: comm_bytes("victim"),
        start_ns: start,
        memcg_id: memcg,
        total_vm_kb: 70_000,
        anon_rss_kb: 65_000,
        file_rss_kb: 1_500,
        shmem_rss_kb: 0,
        pgtables_kb: 160,
        uid: 0,
        oom_score_adj: 0,
        fields: victim_fields::TASK
            | victim_fields::COMM
            | victim_fields::MEMORY
            | victim_fields::OOM_SCORE_ADJ,
        _pad: 0,
        mm: 0xffff_8880_0000_0000 + u64::from(tgid) * 4096,
    }
}

/// Events per episode for `threads` threads (for sizing a stream), averaged.
pub fn events_per_episode(threads: u32) -> f64 {
    4.0 + f64::from(threads) + 1.0 / 16.0
}

/// A record of a dump as `watch` writes it (format 3).
pub enum WatchRecord {
    Event(Box<Event>),
    /// A tick after a full read of the ring (`Writer::drained`).
    Drained(u64),
}

/// The episodes of [`episodes`] as `watch --dump` records them: in timestamp order, each
/// victim's death seen through its pidfd (a userspace record 10 µs after its last thread's
/// exit), and a mark of a full read of the ring every 10 ms of event time.
pub fn as_watch(victims: u64, threads: u32) -> impl Iterator<Item = WatchRecord> {
    const TICK_NS: u64 = 10 * MS;
    let mut held: BTreeMap<(u64, u64), Event> = BTreeMap::new();
    let mut seq = 0u64;
    let mut next_tick = 0u64;
    let mut out = std::collections::VecDeque::new();
    let mut stream = episodes(victims, threads).peekable();
    std::iter::from_fn(move || {
        loop {
            if let Some(r) = out.pop_front() {
                return Some(r);
            }
            // Every episode starts no earlier than the one before: what is held from before
            // the next event's time is complete.
            let horizon = stream.peek().map_or(u64::MAX, |e| e.header.ts_ns);
            let Some(first) = held.first_entry() else {
                let ev = stream.next()?;
                hold(&mut held, &mut seq, ev);
                continue;
            };
            if first.key().0 >= horizon {
                if let Some(ev) = stream.next() {
                    hold(&mut held, &mut seq, ev);
                }
                continue;
            }
            let ev = first.remove();
            let ts = ev.header.ts_ns;
            if next_tick == 0 {
                next_tick = ts - ts % TICK_NS + TICK_NS;
            }
            while ts > next_tick {
                out.push_back(WatchRecord::Drained(next_tick));
                next_tick += TICK_NS;
            }
            out.push_back(WatchRecord::Event(Box::new(ev)));
        }
    })
}

fn hold(held: &mut BTreeMap<(u64, u64), Event>, seq: &mut u64, ev: Event) {
    *seq += 1;
    if let Payload::TaskExit(p) = ev.payload
        && p.group_dead != 0
    {
        let seen = Event {
            header: Header {
                cpu: USERSPACE_CPU,
                ts_ns: ev.header.ts_ns + 10_000,
                ..ev.header
            },
            payload: Payload::GroupExited(GroupExited {
                pid: ev.header.tgid,
                how: exit_seen::PIDFD,
                start_ns: p.start_ns,
                tid: 0,
                _pad: 0,
            }),
        };
        held.insert((seen.header.ts_ns, *seq), seen);
        *seq += 1;
    }
    held.insert((ev.header.ts_ns, *seq), ev);
}
