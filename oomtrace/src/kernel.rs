//! What the running kernel offers and how oomtrace attaches to it. [`btf`] and [`tracefs`]
//! read the kernel's own descriptions; [`offsets`] turns them into the struct offsets and
//! record layouts the eBPF programs read (their `Config`); [`plan`] decides, per hook, which
//! program attaches and how it falls back; [`probes`] loads and attaches the plan; [`cgroups`]
//! finds the memory controller (v1 or v2) and names memcgs; [`kallsyms`] names kernel
//! addresses; [`gfp`] names gfp masks as the kernel does; [`privs`] drops what is not needed
//! once everything is attached.
pub mod btf;
pub mod cgroups;
pub(crate) mod gfp;
pub mod kallsyms;
pub mod offsets;
pub mod plan;
pub mod privs;
pub mod probes;
pub mod tracefs;
