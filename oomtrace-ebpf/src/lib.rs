#![no_std]
// This file exists so that the userspace crate can list the eBPF crate as a build-dependency
// (cargo ignores a build-dependency without a library target). The programs are in main.rs.
