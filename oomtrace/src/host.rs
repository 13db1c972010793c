//! What userspace observes of processes itself, beside the kernel programs: [`deathwatch`] sees
//! a victim finish exiting through a pidfd; [`scan`] finds processes killed before oomtrace
//! started; [`forensics`] describes a stuck victim from /proc (threads, stacks, sockets, memcg);
//! [`workload`] names the container or unit it belongs to; [`unstick`] says what it waits on
//! and how to free it; [`journal`] keeps the memcg limits it raised on disk until put back.
pub mod deathwatch;
pub mod forensics;
pub mod journal;
pub mod memcg_hang;
pub mod memcg_watch;
pub mod oom_domain;
pub mod procfs;
pub mod scan;
pub mod unstick;
pub mod workload;
