//! How oomtrace shows what it saw: [`events`] renders kernel events as text or JSON;
//! the printers (printer.rs) write them, with findings and the rest, in either format;
//! [`metrics`] keeps the Prometheus counters and serves them.
pub mod events;
pub(crate) mod json_sorted;
pub mod metrics;
