//! The commands that are not a session over events (`live` and `report` are, in the library):
//! each a driver of its own.

pub(crate) mod check;
pub(crate) mod unstick;
