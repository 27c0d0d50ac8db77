//! Serving: the pinned cores, their UDP and TCP paths, and the query log.

pub mod batch;
pub mod cores;
pub mod querylog;
pub mod warm;
