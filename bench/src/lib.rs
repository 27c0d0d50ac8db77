//! kubewire's benchmark and test tools: the fake Kubernetes API server (and,
//! as binaries, the null responder and the load generator).

pub mod fake_api;
pub mod load;
pub mod mmsg;
#[cfg(feature = "report")]
pub mod plot;
pub mod probe;
#[cfg(feature = "report")]
pub mod profile;
pub mod scenario;
