//! oomtrace: watch the Linux OOM killer with eBPF and flag victims that do not die.
//!
//! The kernel side (`oomtrace-ebpf`) reports facts; this crate decides what to attach
//! ([`plan`]), finds the offsets the programs need ([`btf`], [`tracefs`], [`layout`]), loads them
//! ([`probes`]), decodes events ([`event`]) and renders them ([`output`]). The tracker
//! ([`lifecycle`]) turns events into victims and findings; death — every thread finished
//! exiting — is seen through a pidfd per victim ([`deathwatch`]); processes killed before
//! oomtrace started are found in /proc ([`scan`]) and stuck ones are described from /proc
//! ([`inspect`]). [`live`] runs it all against the kernel, [`report`] against a [`dump`].
pub mod btf;
pub mod cgroups;
pub mod deathwatch;
pub mod dump;
pub mod event;
pub mod hooks;
pub mod inspect;
pub mod layout;
pub mod lifecycle;
pub mod live;
pub mod metrics;
pub mod outfile;
pub mod output;
pub mod plan;
pub mod privs;
pub mod probes;
pub mod report;
pub mod scan;
#[cfg(test)]
mod scratch;
pub mod session;
pub mod synth;
pub mod tracefs;
pub mod unstick;
pub mod workload;
