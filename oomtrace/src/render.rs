//! How oomtrace shows what it saw: [`events`] renders kernel events as text or JSON;
//! [`sink`] is the one place that decides how every kind of line reads in either format;
//! [`metrics`] keeps the Prometheus counters and serves them.
pub mod events;
pub mod metrics;
pub mod sink;
