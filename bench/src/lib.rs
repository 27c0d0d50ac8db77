//! kubewire's benchmark and test tools: the fake Kubernetes API server (and,
//! as binaries, the null responder and the load generator).

pub mod fake_api;
pub mod load;
pub mod mmsg;
pub mod plot;
pub mod probe;
pub mod profile;
pub mod scenario;
