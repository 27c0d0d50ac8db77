//! Running kubewire: flags and configuration, the Corefile translation,
//! start-up checks, logging, metrics and the served TLS certificate.

pub mod cli;
pub mod config;
pub mod corefile;
pub mod debug;
pub mod dnstap;
pub mod failure;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod nodelocal;
pub mod preflight;
pub mod tls;
pub mod top;
