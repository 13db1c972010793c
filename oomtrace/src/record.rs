//! What oomtrace writes and reads back: [`dump`] is the recording format (`record -o`, read by
//! `report`); [`synth`] makes synthetic event streams for tests and benchmarks; [`outfile`]
//! creates output files the way a root tool must (never following a planted link, never
//! clobbering).
pub mod dump;
pub mod outfile;
pub mod synth;
