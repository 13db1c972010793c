//! How oomtrace shows what it saw: [`events`] renders kernel events and findings as text or
//! JSON lines; [`metrics`] keeps the Prometheus counters and serves them.
pub mod events;
pub mod metrics;
