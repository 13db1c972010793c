//! oomtrace: watch the Linux OOM killer with eBPF and flag victims that do not die.
//!
//! The kernel side (`oomtrace-ebpf`) reports facts; this crate turns them into findings. Its
//! rooms, from the kernel up:
//!
//! - [`kernel`]: what this kernel offers and how to attach to it — BTF, tracefs formats, the
//!   struct offsets the programs read, the attach [`kernel::plan`] (the one place that decides
//!   which program attaches per hook and how it falls back), loading the programs, cgroups, and
//!   the privileges kept after attach.
//! - [`event`]: the records the kernel programs write, decoded.
//! - [`lifecycle`]: the tracker — pure correlation of events into victims, stages, latencies and
//!   findings. No I/O; unit tests drive it with synthetic events.
//! - [`host`]: what userspace itself observes of processes — death through pidfds, victims
//!   killed before oomtrace started, forensics of stuck ones, and how to unstick
//!   them.
//! - [`record`]: dumps (write, read, replay input), synthetic streams, and output files created
//!   safely.
//! - [`render`]: how events, findings and counts are shown — events as text and JSON,
//!   Prometheus metrics, the Perfetto trace.
//! - Leaves every room may use and that use none: [`clock`] (the kernel's clock, wall time,
//!   RFC 3339), [`comm`] (a task's name held inline), [`text`] (names made safe for a
//!   terminal, sizes) and [`workload`] (the pod, container or unit a memcg path names).
//! - The drivers over one [`session::Session`]: [`live`] runs it against the kernel (`watch`,
//!   `record`), [`report`] against a dump. Both hand what it admits to the consumers behind one
//!   `sink::Sink` trait: the [`printer`] of the chosen format (text or JSON lines), the metrics,
//!   the dump, [`hooks`] (`--on-stuck` commands, contained) and `--unstick`.
pub mod clock;
pub mod comm;
pub mod event;
pub mod hooks;
pub mod host;
pub mod kernel;
pub mod lifecycle;
pub mod live;
pub mod printer;
pub mod record;
pub mod render;
pub mod report;
#[cfg(test)]
mod scratch;
pub mod session;
mod sink;
pub mod text;
pub mod workload;
