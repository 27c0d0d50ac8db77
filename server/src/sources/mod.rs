//! Where cluster objects come from, and the control plane thread that
//! follows them and ships their answers to the cores: the Kubernetes API,
//! manifest files, or the embedded demo.

pub mod cluster;
pub mod control_plane;
pub mod explain;
pub mod from_api;
pub mod manifests;
pub mod watch;
