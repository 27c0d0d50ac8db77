//! kubewire's benchmark and test tools: the fake Kubernetes API server, the
//! real peers (etcd, kube-apiserver and CoreDNS, built from their Go
//! modules), and, as binaries, the null responder and the load generator.

pub mod fake_api;
pub mod load;
pub mod mmsg;
pub mod peers;
#[cfg(feature = "report")]
pub mod plot;
pub mod probe;
#[cfg(feature = "report")]
pub mod profile;
pub mod scenario;
