//! What userspace observes of processes itself, beside the kernel programs: [`deathwatch`] sees
//! a victim finish exiting through a pidfd; [`scan`] finds processes killed before oomtrace
//! started; [`forensics`] describes a stuck victim from /proc (threads, stacks, sockets, memcg);
//! [`unstick`] says what it waits on and how to free it; [`journal`] keeps the memcg limits it
//! raised on disk until put back; [`memstate`] reads a memcg's (or the machine's) memory at a
//! kill; [`memcg_watch`] and [`memcg_hang`] follow the kernel's memcg OOM notifications.
pub mod deathwatch;
pub mod forensics;
pub mod journal;
pub mod memcg_hang;
pub mod memcg_watch;
pub mod memstate;
pub mod oom_domain;
pub mod procfs;
pub mod scan;
pub mod unstick;
