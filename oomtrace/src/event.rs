//! Decoding ring-buffer records into typed events.
//!
//! A record is a [`Header`] followed by the payload its kind names. Decoding checks the kind and
//! the exact size and returns a typed [`DecodeError`] for anything else: a short, long or unknown
//! record never panics (dumps from other versions and corrupted files go through here too).

use std::mem::size_of;

use oomtrace_common::{
    AllocStack, CgroupMkdir, GroupExited, Header, KernelSigkill, MarkVictim, MemcgOom, MemcgState,
    OomCandidate, OomInvoke, OomInvokeDone, OomKill, ParentNotified, PreExisting, Reaper, TaskExit,
    TaskFree,
};
pub use oomtrace_common::{
    EventKind, cgroup_mkdir, exit_seen, group_dead_source, memcg_oom, memcg_state, pre_existing,
    sender_state, victim_fields,
};

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record is shorter than the common header.
    #[error("record of {len} bytes is shorter than the {need}-byte header")]
    ShortHeader { len: usize, need: usize },
    /// The header names a kind this version does not know.
    #[error("unknown event kind {kind}")]
    UnknownKind { kind: u32 },
    /// The record's size does not match its kind.
    #[error("{kind:?} record has {len} bytes, expected {need}")]
    SizeMismatch {
        kind: EventKind,
        len: usize,
        need: usize,
    },
}

/// Defines [`Payload`] (one variant per kind, holding its payload struct) and the per-kind
/// matches of [`Payload::kind`], [`Event::decode`] and [`Event::encode`] from the one list of
/// kinds, [`oomtrace_common::event_kinds!`].
macro_rules! define_payload {
    ($($(#[$doc:meta])* $kind:ident = $num:literal, $name:literal, $payload:ident;)*) => {
        /// The payload of an event, by kind.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Payload {
            $($(#[$doc])* $kind($payload),)*
        }

        impl Payload {
            /// The kind this payload is of.
            pub(crate) fn kind(&self) -> EventKind {
                match self {
                    $(Payload::$kind(_) => EventKind::$kind,)*
                }
            }

            /// Decodes the body of a record of `kind` (an older, shorter layout of its payload
            /// included: see [`Pod::OLDER`]).
            fn decode(kind: EventKind, body: &[u8]) -> Result<Payload, DecodeError> {
                Ok(match kind {
                    $(EventKind::$kind => {
                        Payload::$kind(grown_body_of(kind, body, <$payload as Pod>::OLDER)?)
                    })*
                })
            }

            /// The payload's bytes as the kernel writes them.
            fn bytes(&self) -> &[u8] {
                match self {
                    $(Payload::$kind(p) => pod_bytes(p),)*
                }
            }
        }
    };
}

oomtrace_common::event_kinds!(define_payload);

/// One decoded event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub header: Header,
    pub payload: Payload,
}

/// OOM invocations an event counts ([`Event::invocations`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invocations {
    /// The OOM domain.
    pub(crate) memcg_id: u64,
    pub(crate) count: u32,
    /// Counted by an invocation hook (else by the kernel's memcg notifications).
    pub(crate) hooked: bool,
}

/// A thread whose process a record lacks ([`Completion`]).
pub(crate) struct MissingTgid<'a> {
    pub(crate) tid: u32,
    /// Where its tgid goes.
    pub(crate) tgid: &'a mut u32,
    /// The flags, and the bit that then says the tgid came from /proc.
    pub(crate) from_proc: Option<(&'a mut u32, u32)>,
}

/// What userspace fills in of a kernel record ([`Event::completion`]).
pub(crate) struct Completion<'a> {
    /// A thread whose process the record lacks.
    pub(crate) tgid: Option<MissingTgid<'a>>,
    /// A kernel address (an `mm`) not to show as it is.
    pub(crate) address: Option<&'a mut u64>,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        self.payload.kind()
    }

    /// Who the event is about. The one place that knows which field names the process and
    /// which only a thread (classic tracepoints name the thread; userspace fills the process in
    /// from /proc where it can).
    pub(crate) fn subject(&self) -> Subject {
        let process = |tid, tgid: u32| Subject {
            tid,
            tgid: (tgid != 0).then_some(tgid),
        };
        match self.payload {
            Payload::OomKill(p) => process(p.chosen_pid, p.chosen_tgid),
            Payload::OomCandidate(p) => process(p.pid, p.tgid),
            Payload::MarkVictim(p) => process(p.pid, p.tgid),
            Payload::KernelSigkill(p) => process(p.target_pid, p.target_tgid),
            // The reaper names the marked thread.
            Payload::WakeReaper(r)
            | Payload::StartReaping(r)
            | Payload::FinishReaping(r)
            | Payload::SkipReaping(r) => process(r.pid, 0),
            // The freed task: a leader's free is its process's release, but on the classic
            // path a thread's free is reported too, so the process is not known from it.
            Payload::TaskFree(p) => process(p.pid, 0),
            Payload::GroupExited(p) => process(p.pid, p.pid),
            Payload::PreExisting(p) => process(p.pid, p.pid),
            Payload::ParentNotified(p) => process(self.header.pid, p.pid),
            // The current task is the subject.
            Payload::TaskExit(_)
            | Payload::OomInvoke(_)
            | Payload::OomInvokeDone(_)
            | Payload::MemcgOom(_)
            | Payload::AllocStack(_)
            | Payload::MemcgState(_)
            | Payload::CgroupMkdir(_)
            | Payload::CgroupRmdir(_) => process(self.header.pid, self.header.tgid),
        }
    }

    /// The memcg the event names, if it names one (an OOM domain or the victim's own).
    pub(crate) fn memcg(&self) -> Option<u64> {
        match self.payload {
            Payload::OomInvoke(p) => Some(p.memcg_id),
            Payload::OomKill(p) => Some(p.memcg_id),
            Payload::MarkVictim(p) if p.fields & victim_fields::TASK != 0 => Some(p.memcg_id),
            Payload::PreExisting(p) if p.memcg_id != 0 => Some(p.memcg_id),
            Payload::MemcgOom(p) => Some(p.memcg_id),
            Payload::MemcgState(p) if p.memcg_id != 0 => Some(p.memcg_id),
            // A mark without its task's fields, a process or a state of the machine (id 0).
            Payload::MarkVictim(_) | Payload::PreExisting(_) | Payload::MemcgState(_) => None,
            // The SIGKILL's memcgs are its target's and sender's (`memcgs`), not an OOM's.
            Payload::KernelSigkill(_)
            | Payload::OomInvokeDone(_)
            | Payload::AllocStack(_)
            | Payload::OomCandidate(_)
            | Payload::WakeReaper(_)
            | Payload::StartReaping(_)
            | Payload::FinishReaping(_)
            | Payload::SkipReaping(_)
            | Payload::TaskExit(_)
            | Payload::TaskFree(_)
            | Payload::GroupExited(_)
            | Payload::CgroupMkdir(_)
            | Payload::CgroupRmdir(_)
            | Payload::ParentNotified(_) => None,
        }
    }

    /// Every memcg the event names: [`Event::memcg`] and, for a kill decision, the victim's own
    /// memcg where it differs from the OOM domain (userspace resolves and records each).
    pub(crate) fn memcgs(&self) -> impl Iterator<Item = u64> {
        let own = match self.payload {
            Payload::OomKill(p) if p.chosen_memcg_id != 0 && p.chosen_memcg_id != p.memcg_id => {
                [Some(p.chosen_memcg_id), None]
            }
            // A SIGKILL's target and sender (a workload each).
            Payload::KernelSigkill(p) => [
                (p.target_memcg_id != 0).then_some(p.target_memcg_id),
                (p.sender_memcg_id != 0 && p.sender_memcg_id != p.target_memcg_id)
                    .then_some(p.sender_memcg_id),
            ],
            Payload::OomInvoke(_)
            | Payload::OomInvokeDone(_)
            | Payload::OomKill(_)
            | Payload::MarkVictim(_)
            | Payload::AllocStack(_)
            | Payload::OomCandidate(_)
            | Payload::WakeReaper(_)
            | Payload::StartReaping(_)
            | Payload::FinishReaping(_)
            | Payload::SkipReaping(_)
            | Payload::TaskExit(_)
            | Payload::TaskFree(_)
            | Payload::GroupExited(_)
            | Payload::PreExisting(_)
            | Payload::MemcgOom(_)
            | Payload::MemcgState(_)
            | Payload::CgroupMkdir(_)
            | Payload::CgroupRmdir(_)
            | Payload::ParentNotified(_) => [None, None],
        };
        self.memcg().into_iter().chain(own.into_iter().flatten())
    }

    /// The process a kill-path event names, to watch for its death: its leader's start time
    /// (0 when not known) and its comm. Its tgid is [`Event::subject`]'s.
    pub(crate) fn killed(&self) -> Option<(u64, [u8; 16])> {
        match self.payload {
            Payload::OomKill(p) => Some((p.chosen_start_ns, p.chosen_comm)),
            Payload::KernelSigkill(p) => Some((p.target_start_ns, p.target_comm)),
            Payload::MarkVictim(p) if p.fields & victim_fields::TASK != 0 => {
                Some((p.start_ns, p.comm))
            }
            Payload::MarkVictim(p) => Some((0, p.comm)),
            // A tracked thread exiting names its process for sure (no /proc race).
            Payload::TaskExit(p) => Some((p.start_ns, self.header.comm)),
            Payload::OomInvoke(_)
            | Payload::OomInvokeDone(_)
            | Payload::AllocStack(_)
            | Payload::OomCandidate(_)
            | Payload::WakeReaper(_)
            | Payload::StartReaping(_)
            | Payload::FinishReaping(_)
            | Payload::SkipReaping(_)
            | Payload::TaskFree(_)
            | Payload::GroupExited(_)
            | Payload::PreExisting(_)
            | Payload::MemcgOom(_)
            | Payload::MemcgState(_)
            | Payload::CgroupMkdir(_)
            | Payload::CgroupRmdir(_)
            | Payload::ParentNotified(_) => None,
        }
    }

    /// The memcgs whose state is read at a kill (the kill decision, or the mark where the
    /// decision is not seen): the OOM domain and the victim's own (id 0: the machine's).
    pub(crate) fn memcgs_at_kill(&self) -> [Option<u64>; 2] {
        match self.payload {
            Payload::OomKill(p) => [
                Some(p.memcg_id),
                (p.chosen_memcg_id != 0).then_some(p.chosen_memcg_id),
            ],
            Payload::MarkVictim(p) if p.fields & victim_fields::TASK != 0 && p.memcg_id != 0 => {
                [Some(p.memcg_id), None]
            }
            Payload::OomInvoke(_)
            | Payload::OomInvokeDone(_)
            | Payload::MarkVictim(_)
            | Payload::KernelSigkill(_)
            | Payload::AllocStack(_)
            | Payload::OomCandidate(_)
            | Payload::WakeReaper(_)
            | Payload::StartReaping(_)
            | Payload::FinishReaping(_)
            | Payload::SkipReaping(_)
            | Payload::TaskExit(_)
            | Payload::TaskFree(_)
            | Payload::GroupExited(_)
            | Payload::PreExisting(_)
            | Payload::MemcgOom(_)
            | Payload::MemcgState(_)
            | Payload::CgroupMkdir(_)
            | Payload::CgroupRmdir(_)
            | Payload::ParentNotified(_) => [None, None],
        }
    }

    /// The OOM invocations the event counts, if it counts any.
    pub(crate) fn invocations(&self) -> Option<Invocations> {
        match self.payload {
            Payload::OomInvoke(p) => Some(Invocations {
                memcg_id: p.memcg_id,
                count: 1,
                hooked: true,
            }),
            Payload::MemcgOom(p) => Some(Invocations {
                memcg_id: p.memcg_id,
                count: p.invocations,
                hooked: false,
            }),
            Payload::OomInvokeDone(_)
            | Payload::OomKill(_)
            | Payload::MarkVictim(_)
            | Payload::KernelSigkill(_)
            | Payload::AllocStack(_)
            | Payload::OomCandidate(_)
            | Payload::WakeReaper(_)
            | Payload::StartReaping(_)
            | Payload::FinishReaping(_)
            | Payload::SkipReaping(_)
            | Payload::TaskExit(_)
            | Payload::TaskFree(_)
            | Payload::GroupExited(_)
            | Payload::PreExisting(_)
            | Payload::MemcgState(_)
            | Payload::CgroupMkdir(_)
            | Payload::CgroupRmdir(_)
            | Payload::ParentNotified(_) => None,
        }
    }

    /// What userspace completes of the record before anything reads it: the process of a
    /// thread the kernel named only by its tid, and the kernel addresses it carries.
    pub(crate) fn completion(&mut self) -> Completion<'_> {
        use victim_fields::{TASK, TGID_FROM_PROC};
        let none = Completion {
            tgid: None,
            address: None,
        };
        match &mut self.payload {
            Payload::MarkVictim(p) => Completion {
                tgid: (p.fields & TASK == 0 && p.tgid == 0).then_some(MissingTgid {
                    tid: p.pid,
                    tgid: &mut p.tgid,
                    from_proc: Some((&mut p.fields, TGID_FROM_PROC)),
                }),
                address: Some(&mut p.mm),
            },
            Payload::KernelSigkill(p) => Completion {
                tgid: (p.target_tgid == 0).then_some(MissingTgid {
                    tid: p.target_pid,
                    tgid: &mut p.target_tgid,
                    from_proc: None,
                }),
                address: Some(&mut p.target_mm),
            },
            Payload::OomKill(p) => Completion {
                tgid: None,
                address: Some(&mut p.chosen_mm),
            },
            Payload::OomInvoke(_)
            | Payload::OomInvokeDone(_)
            | Payload::AllocStack(_)
            | Payload::OomCandidate(_)
            | Payload::WakeReaper(_)
            | Payload::StartReaping(_)
            | Payload::FinishReaping(_)
            | Payload::SkipReaping(_)
            | Payload::TaskExit(_)
            | Payload::TaskFree(_)
            | Payload::GroupExited(_)
            | Payload::PreExisting(_)
            | Payload::MemcgOom(_)
            | Payload::MemcgState(_)
            | Payload::CgroupMkdir(_)
            | Payload::CgroupRmdir(_)
            | Payload::ParentNotified(_) => none,
        }
    }

    /// Decodes one record.
    pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
        let header: Header = read_pod(buf).ok_or(DecodeError::ShortHeader {
            len: buf.len(),
            need: size_of::<Header>(),
        })?;
        let kind = EventKind::from_u32(header.kind)
            .ok_or(DecodeError::UnknownKind { kind: header.kind })?;
        let body = &buf[size_of::<Header>()..];
        let payload = Payload::decode(kind, body)?;
        Ok(Event { header, payload })
    }

    /// Encodes the event as the kernel would have written it (dumps, tests, benchmarks).
    pub fn encode(&self) -> Vec<u8> {
        let mut header = self.header;
        header.kind = self.kind() as u32;
        let mut out = pod_bytes(&header).to_vec();
        out.extend_from_slice(self.payload.bytes());
        out
    }
}

/// The path a [`CgroupMkdir`] carries, from its hierarchy's root (`/a/b`; bytes that are not
/// UTF-8 replaced).
pub(crate) fn mkdir_path(p: &CgroupMkdir) -> String {
    let n = (p.path_len as usize).min(p.path.len());
    let bytes = &p.path[..n];
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(n);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The thread an event names and, when known, its process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Subject {
    pub(crate) tid: u32,
    pub(crate) tgid: Option<u32>,
}

impl Subject {
    /// The process when known, else the thread.
    pub(crate) fn process_or_thread(self) -> u32 {
        self.tgid.unwrap_or(self.tid)
    }
}

/// Marker for the plain-old-data types of `oomtrace-common` (repr(C), no padding, any bytes valid).
trait Pod: Copy {
    /// The sizes of older, shorter layouts of this payload that dumps hold (see
    /// [`OOM_KILL_OLDER`]).
    const OLDER: &'static [usize] = &[];
}
impl Pod for Header {}
impl Pod for OomInvoke {}
impl Pod for OomInvokeDone {}
impl Pod for OomKill {
    const OLDER: &'static [usize] = &OOM_KILL_OLDER;
}
impl Pod for MarkVictim {
    const OLDER: &'static [usize] = &MARK_VICTIM_OLDER;
}
impl Pod for KernelSigkill {
    const OLDER: &'static [usize] = &KERNEL_SIGKILL_OLDER;
}
impl Pod for AllocStack {}
impl Pod for OomCandidate {}
impl Pod for Reaper {}
impl Pod for TaskExit {}
impl Pod for TaskFree {}
impl Pod for ParentNotified {}
impl Pod for GroupExited {}
impl Pod for PreExisting {}
impl Pod for MemcgOom {}
impl Pod for MemcgState {}
impl Pod for CgroupMkdir {}

fn body_of<T: Pod>(kind: EventKind, body: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if body.len() != need {
        return Err(DecodeError::SizeMismatch {
            kind,
            len: body.len() + size_of::<Header>(),
            need: need + size_of::<Header>(),
        });
    }
    read_pod(body).ok_or(DecodeError::SizeMismatch {
        kind,
        len: body.len(),
        need,
    })
}

/// Older, shorter layouts of event bodies that dumps hold, each a prefix of the current one:
/// - dump format 1 (oomtrace before its victims' mm identities and the 64-byte message):
///   `OomKill` 104 bytes (a 32-byte message), `MarkVictim` 96 (no `mm`), `KernelSigkill` 40
///   (no `target_mm`);
/// - `OomKill` 136 bytes before `chosen_memcg_id` was appended;
/// - `OomKill` 144 bytes before `chosen_mm`, `KernelSigkill` 48 before `sender_flags` (dump
///   format 2 as written until then: the victim's mm from the kill decision and the sender's
///   state read as 0, unknown).
const OOM_KILL_OLDER: [usize; 3] = [104, OOM_KILL_V2_LEN, OOM_KILL_V3_LEN];
const OOM_KILL_V2_LEN: usize = 136;
const OOM_KILL_V3_LEN: usize = 144;
const MARK_VICTIM_OLDER: [usize; 1] = [96];
const KERNEL_SIGKILL_OLDER: [usize; 3] = [40, KERNEL_SIGKILL_V2_LEN, KERNEL_SIGKILL_V3_LEN];
const KERNEL_SIGKILL_V2_LEN: usize = 48;
/// Before every SIGKILL was reported (only the kernel's own, `SI_KERNEL`): no `si_code`, no
/// sender uid or memcg. Zero-filled, `sender_flags` lacks `sender_state::CODE`, which says so.
const KERNEL_SIGKILL_V3_LEN: usize = 56;
// Each older layout is a prefix: the fields added since start where it ends (and a shorter
// message is the longer one's first bytes, its NUL padding the zeros added).
const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(OomKill, message) + 32 == OOM_KILL_OLDER[0]);
    assert!(offset_of!(OomKill, chosen_memcg_id) == OOM_KILL_V2_LEN);
    assert!(offset_of!(OomKill, chosen_mm) == OOM_KILL_V3_LEN);
    assert!(offset_of!(MarkVictim, mm) == MARK_VICTIM_OLDER[0]);
    assert!(offset_of!(KernelSigkill, target_mm) == KERNEL_SIGKILL_OLDER[0]);
    assert!(offset_of!(KernelSigkill, sender_flags) == KERNEL_SIGKILL_V2_LEN);
    assert!(offset_of!(KernelSigkill, si_code) == KERNEL_SIGKILL_V3_LEN);
};

/// Like [`body_of`], also taking a body of one of the type's `older`, shorter layouts (each a
/// prefix of the current one): the fields it lacks read as 0.
fn grown_body_of<T: Pod>(kind: EventKind, body: &[u8], older: &[usize]) -> Result<T, DecodeError> {
    if body.len() < size_of::<T>() && older.contains(&body.len()) {
        let mut grown = body.to_vec();
        grown.resize(size_of::<T>(), 0);
        return body_of(kind, &grown);
    }
    body_of(kind, body)
}

fn read_pod<T: Pod>(buf: &[u8]) -> Option<T> {
    (buf.len() >= size_of::<T>())
        // SAFETY: T is Pod (every bit pattern valid) and the slice holds at least size_of::<T>()
        // bytes; read_unaligned copes with any alignment.
        .then(|| unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

fn pod_bytes<T: Pod>(value: &T) -> &[u8] {
    // SAFETY: T is Pod without padding, so all of its bytes are initialized.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>()) }
}

/// The text of a NUL-padded kernel string (comm, message), lossily as UTF-8.
pub(crate) fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = &bytes[..end];
    // Valid UTF-8 (every comm in practice) copied as it is: `from_utf8_lossy` walks it in
    // chunks, three times the instructions.
    match std::str::from_utf8(text) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(text).into_owned(),
    }
}

/// A fixed-size comm field from a string (tests, synthetic dumps).
pub fn comm_bytes<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N - 1);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

/// A memcg kill decision for tests: pid 50 (hog) chosen in memcg 77, itself in memcg 78.
#[cfg(test)]
pub(crate) fn sample_oom_kill() -> OomKill {
    OomKill {
        chosen_pid: 50,
        chosen_tgid: 50,
        chosen_comm: comm_bytes("hog"),
        chosen_start_ns: 9,
        chosen_points: 25_000,
        totalpages: 25_600,
        memcg_id: 77,
        constraint: 3,
        order: 0,
        gfp_mask: 0xcc0,
        _pad: 0,
        message: comm_bytes("Memory cgroup out of memory"),
        chosen_memcg_id: 78,
        chosen_mm: 0xbeef,
    }
}

/// A SIGKILL for tests: the kernel's, of the whole of process `tgid` (`comm`, started at
/// `start_ns`); every other field zero.
#[cfg(test)]
pub(crate) fn sample_sigkill(tgid: u32, comm: &str, start_ns: u64) -> KernelSigkill {
    KernelSigkill {
        target_pid: tgid,
        target_tgid: tgid,
        target_comm: comm_bytes(comm),
        target_start_ns: start_ns,
        group: 1,
        ..KernelSigkill::ZERO
    }
}

/// The name of a [`exit_seen`] value, as in JSON.
pub(crate) fn exit_seen_name(how: u32) -> &'static str {
    match how {
        exit_seen::PIDFD => "pidfd",
        exit_seen::GONE => "gone",
        exit_seen::PID_REUSED => "pid_reused",
        exit_seen::PARENT_NOTIFIED => "parent_notified",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: EventKind) -> Header {
        Header {
            kind: kind as u32,
            cpu: 1,
            ts_ns: 123_456,
            pid: 10,
            tgid: 10,
            comm: comm_bytes("hog"),
        }
    }

    fn event(payload: Payload) -> Event {
        Event {
            header: header(payload.kind()),
            payload,
        }
    }

    fn exit_event() -> Event {
        Event {
            header: header(EventKind::TaskExit),
            payload: Payload::TaskExit(TaskExit {
                group_dead: 1,
                group_dead_source: group_dead_source::TRACEPOINT,
                start_ns: 99,
            }),
        }
    }

    #[test]
    fn round_trip_every_kind() {
        let reaper = Reaper { pid: 7, _pad: 0 };
        let payloads = [
            Payload::OomInvoke(OomInvoke {
                memcg_id: 5,
                gfp_mask: 0xcc0,
                order: 0,
            }),
            Payload::OomInvokeDone(OomInvokeDone { killed: 1, _pad: 0 }),
            Payload::WakeReaper(reaper),
            Payload::StartReaping(reaper),
            Payload::FinishReaping(reaper),
            Payload::SkipReaping(reaper),
            exit_event().payload,
            Payload::TaskFree(TaskFree {
                pid: 7,
                _pad: 0,
                start_ns: 1,
            }),
        ];
        for payload in payloads {
            let ev = Event {
                header: header(EventKind::OomInvoke),
                payload,
            };
            let bytes = ev.encode();
            let back = Event::decode(&bytes).unwrap();
            assert_eq!(back.payload, payload);
            assert_eq!(back.header.kind, back.kind() as u32);
        }
    }

    #[test]
    fn short_and_long_records_are_typed_errors() {
        let bytes = exit_event().encode();
        for cut in 0..bytes.len() {
            let err = Event::decode(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(
                    err,
                    DecodeError::ShortHeader { .. } | DecodeError::SizeMismatch { .. }
                ),
                "cut at {cut}: {err:?}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            Event::decode(&long).unwrap_err(),
            DecodeError::SizeMismatch {
                kind: EventKind::TaskExit,
                len: bytes.len() + 1,
                need: bytes.len()
            }
        );
    }

    #[test]
    fn unknown_kind_is_reported() {
        let mut bytes = exit_event().encode();
        bytes[..4].copy_from_slice(&999u32.to_ne_bytes());
        assert_eq!(
            Event::decode(&bytes).unwrap_err(),
            DecodeError::UnknownKind { kind: 999 }
        );
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic pseudo-random walk over lengths and contents.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 160) as usize;
            let mut buf: Vec<u8> = (0..len).map(|i| (x >> (i % 56)) as u8).collect();
            if len >= 4 {
                let kinds = EventKind::ALL;
                let k = kinds[(x as usize / 7) % kinds.len()] as u32;
                buf[..4].copy_from_slice(&k.to_ne_bytes());
            }
            let _ = Event::decode(&buf);
        }
    }

    #[test]
    fn cstr_stops_at_nul() {
        assert_eq!(cstr(b"abc\0def"), "abc");
        assert_eq!(cstr(b"abcdef"), "abcdef");
        assert_eq!(
            cstr(&comm_bytes::<16>("a-very-long-command-name")),
            "a-very-long-com"
        );
        // Not UTF-8: replaced as `from_utf8_lossy` does, up to the NUL.
        assert_eq!(cstr(b"a\xffb\xe2\x82\0x"), "a\u{fffd}b\u{fffd}");
        assert_eq!(cstr(b"\0abc"), "");
    }

    /// Dumps written before `chosen_memcg_id` was appended hold 136-byte `OomKill` bodies:
    /// they still decode, the new field as 0 (unknown); any other size is refused.
    #[test]
    fn an_oom_kill_of_the_older_layout_decodes_without_its_new_field() {
        let kill = sample_oom_kill();
        let ev = event(Payload::OomKill(kill));
        let bytes = ev.encode();
        assert_eq!(bytes.len(), size_of::<Header>() + OOM_KILL_V2_LEN + 16);
        let Payload::OomKill(new) = Event::decode(&bytes).unwrap().payload else {
            panic!("not an oom_kill")
        };
        assert_eq!((new.chosen_memcg_id, new.chosen_mm), (78, 0xbeef));
        let old = &bytes[..size_of::<Header>() + OOM_KILL_V2_LEN];
        let Payload::OomKill(old) = Event::decode(old).unwrap().payload else {
            panic!("not an oom_kill")
        };
        assert_eq!((old.chosen_memcg_id, old.memcg_id), (0, 77));
        assert_eq!(old.message, kill.message);
        assert!(Event::decode(&bytes[..bytes.len() - 4]).is_err());
    }

    /// Dump format 2 as written before the sender's state and the chosen victim's mm: 48-byte
    /// `KernelSigkill` and 144-byte `OomKill` bodies. They still decode, the new fields as 0
    /// (unknown: the tracker then judges as it did); a body a few bytes off is refused.
    #[test]
    fn sigkills_and_kill_decisions_of_the_format_2_layouts_decode_without_their_new_fields() {
        let sig = KernelSigkill {
            target_pid: 42,
            target_tgid: 42,
            target_mm: 0xdead,
            sender_flags: sender_state::KNOWN | sender_state::EXITING,
            ..zeroed()
        };
        let ev = event(Payload::KernelSigkill(sig));
        let bytes = ev.encode();
        assert_eq!(
            bytes.len(),
            size_of::<Header>() + size_of::<KernelSigkill>()
        );
        assert_eq!(
            Event::decode(&bytes).unwrap().payload,
            Payload::KernelSigkill(sig)
        );
        let old = &bytes[..size_of::<Header>() + KERNEL_SIGKILL_V2_LEN];
        let Payload::KernelSigkill(old) = Event::decode(old).unwrap().payload else {
            panic!("not a kernel_sigkill")
        };
        assert_eq!((old.target_mm, old.sender_flags), (0xdead, 0));
        for cut in [4, 12] {
            assert!(Event::decode(&bytes[..bytes.len() - cut]).is_err(), "{cut}");
        }

        let ev = event(Payload::OomKill(sample_oom_kill()));
        let bytes = ev.encode();
        let old = &bytes[..size_of::<Header>() + OOM_KILL_V3_LEN];
        let Payload::OomKill(old) = Event::decode(old).unwrap().payload else {
            panic!("not an oom_kill")
        };
        assert_eq!((old.chosen_memcg_id, old.chosen_mm), (78, 0));
    }

    /// Dumps written before every SIGKILL was reported: a 56-byte `KernelSigkill` (no
    /// `si_code`, sender uid or memcg, target state or memcg) still decodes, without
    /// `sender_state::CODE`, which is what tells the tracker it was the kernel's own.
    #[test]
    fn sigkills_of_the_kernel_only_layout_decode_as_the_kernels() {
        let sig = KernelSigkill {
            target_pid: 42,
            target_tgid: 42,
            target_mm: 0xdead,
            // As the kernel side wrote it then: no CODE bit (sender_flags is in the old prefix).
            sender_flags: sender_state::KNOWN,
            si_code: oomtrace_common::si_code::SI_USER,
            sender_uid: 1000,
            sender_memcg_id: 7,
            target_memcg_id: 8,
            ..zeroed()
        };
        let ev = event(Payload::KernelSigkill(sig));
        let bytes = ev.encode();
        assert_eq!(
            Event::decode(&bytes).unwrap().payload,
            Payload::KernelSigkill(sig)
        );
        let old = &bytes[..size_of::<Header>() + KERNEL_SIGKILL_V3_LEN];
        let Payload::KernelSigkill(old) = Event::decode(old).unwrap().payload else {
            panic!("not a kernel_sigkill")
        };
        assert_eq!(
            (old.target_mm, old.sender_flags),
            (0xdead, sender_state::KNOWN)
        );
        assert_eq!(
            (old.sender_uid, old.sender_memcg_id, old.target_memcg_id),
            (0, 0, 0)
        );
        assert!(Event::decode(&bytes[..size_of::<Header>() + 60]).is_err());
    }

    fn zeroed<T: Pod>() -> T {
        read_pod(&vec![0u8; size_of::<T>()]).expect("sized")
    }

    /// Dump format 1's bodies were shorter (testdata/README.md): each still decodes, the
    /// fields added since as 0; a body of any other length is refused.
    #[test]
    fn format_1_bodies_decode_without_the_fields_added_since() {
        let kill = sample_oom_kill();
        let mark = MarkVictim {
            pid: 42,
            tgid: 42,
            mm: 0xdead,
            fields: victim_fields::TASK,
            ..zeroed()
        };
        let sig = KernelSigkill {
            target_pid: 42,
            target_tgid: 42,
            target_mm: 0xdead,
            sender_flags: sender_state::KNOWN,
            ..zeroed()
        };
        let events = [
            (EventKind::OomKill, Payload::OomKill(kill), 104),
            (EventKind::MarkVictim, Payload::MarkVictim(mark), 96),
            (EventKind::KernelSigkill, Payload::KernelSigkill(sig), 40),
        ];
        for (kind, payload, older) in events {
            let ev = Event {
                header: header(kind),
                payload,
            };
            let bytes = ev.encode();
            let old = &bytes[..size_of::<Header>() + older];
            let back = Event::decode(old).unwrap_or_else(|e| panic!("{older}: {e}"));
            match back.payload {
                Payload::OomKill(k) => {
                    assert_eq!((k.memcg_id, k.chosen_memcg_id, k.chosen_mm), (77, 0, 0));
                    assert_eq!(cstr(&k.message), cstr(&kill.message[..32]));
                }
                Payload::MarkVictim(m) => assert_eq!((m.tgid, m.mm), (42, 0)),
                Payload::KernelSigkill(k) => {
                    assert_eq!((k.target_tgid, k.target_mm, k.sender_flags), (42, 0, 0));
                }
                other => panic!("{other:?}"),
            }
            assert!(Event::decode(&old[..old.len() - 1]).is_err(), "{older} - 1");
        }
    }

    /// A classic tracepoint names a thread only: the subject says so, and the process is used
    /// wherever the event carries it.
    #[test]
    fn the_subject_is_the_process_when_known_else_the_thread() {
        let mut sig = KernelSigkill {
            target_tgid: 0,
            ..sample_sigkill(43, "hog", 0)
        };
        let ev = |sig| event(Payload::KernelSigkill(sig));
        let thread_only = ev(sig).subject();
        assert_eq!((thread_only.tid, thread_only.tgid), (43, None));
        assert_eq!(thread_only.process_or_thread(), 43);
        sig.target_tgid = 42;
        assert_eq!(ev(sig).subject().process_or_thread(), 42);
        let kill = event(Payload::OomKill(sample_oom_kill()));
        assert_eq!(kill.subject().tgid, Some(50));
        assert_eq!(kill.memcg(), Some(77), "the OOM domain");
        assert_eq!(
            kill.memcgs().collect::<Vec<_>>(),
            [77, 78],
            "and the victim's own, to be resolved too"
        );
        let exit = exit_event();
        assert_eq!(exit.subject().tgid, Some(10), "the current task's process");
        assert_eq!(exit.memcg(), None);
    }
}
