//! oomtrace's kernel programs. They report facts and nothing more: every program reads what its
//! hook offers, writes one event to the ring buffer and returns. Which program of a hook gets
//! loaded (fentry, kprobe, tp_btf, raw or classic tracepoint) is decided by userspace
//! (`oomtrace/src/kernel/plan.rs`); struct and record offsets come from userspace too (`CONFIG`).
//!
//! One module per hook family, each program a thin entry point around a fallible helper.
#![no_std]
#![no_main]
// `asm!` for the one atomic add (emit.rs): the BPF target has no Rust atomics.
#![feature(asm_experimental_arch)]

mod cgroup;
mod emit;
mod exit;
mod files;
mod kernel;
mod oom;
mod reaper;
mod victim;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// MIT OR GPL-2.0 (Cargo.toml, LICENSE-MIT, LICENSE-GPL-2.0), which the kernel reads as
/// GPL-compatible: required for the GPL-only helpers these programs call.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
