//! Command-line flags.

use clap::{Parser, ValueEnum};
use kubewire_control_plane::PodMode;
use std::net::SocketAddr;
use std::path::PathBuf;

/// kubewire: a thread-per-core Kubernetes cluster DNS server.
#[derive(Parser, Debug, Clone)]
#[command(name = "kubewire", version, about, long_about = None)]
pub struct Args {
    /// Serve the embedded demo cluster (never used unless asked for).
    #[arg(long, conflicts_with = "manifests")]
    pub demo: bool,

    /// Serve the objects in a YAML/JSON manifest file, or a directory of them.
    /// The path is watched, and edits are served within milliseconds.
    #[arg(long, value_name = "PATH")]
    pub manifests: Option<PathBuf>,

    /// Kubeconfig for the cluster to serve. Without --manifests or --demo,
    /// the cluster is found from this, $KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account, in that order.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["demo", "manifests"])]
    pub kubeconfig: Option<PathBuf>,

    /// Serve only these namespaces (comma-separated), as CoreDNS's `namespaces`.
    #[arg(long, value_name = "NS,...", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Serve only Services (and their EndpointSlices) matching this label
    /// selector, as CoreDNS's `labels`.
    #[arg(long, value_name = "SELECTOR")]
    pub labels: Option<String>,

    /// After this long without a complete first sync with the API server,
    /// answer from what is known (with a warning); /ready waits for the sync.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub startup_timeout_ms: u64,

    /// Where `/health` answers 200 while the process serves (CoreDNS's health plugin).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub health_addr: SocketAddr,

    /// Where `/ready` answers 200 once every core holds the first full sync,
    /// and 503 before (CoreDNS's ready plugin).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8181")]
    pub ready_addr: SocketAddr,

    /// Address to serve DNS on, over UDP and TCP. Repeat for several.
    #[arg(long = "listen", value_name = "ADDR", default_value = "127.0.0.1:5353")]
    pub listen: Vec<SocketAddr>,

    /// Serving cores: a count (`2`) or a CPU list (`0,2-3`). Default: every
    /// CPU in the process's affinity mask (so a pod pinned by the static CPU
    /// manager gets exactly its CPUs).
    #[arg(long, value_name = "N|LIST")]
    pub cores: Option<String>,

    /// Cluster zone served. Repeat for several.
    #[arg(long = "zone", value_name = "ZONE", default_value = "cluster.local")]
    pub zones: Vec<String>,

    /// TTL of every record, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub ttl: u32,

    /// Pod records: disabled, insecure or verified.
    #[arg(long, value_name = "MODE", default_value = "insecure")]
    pub pods: PodMode,

    /// Name endpoints without a hostname after their pod.
    #[arg(long)]
    pub endpoint_pod_names: bool,

    /// Close a TCP connection idle this long.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub tcp_idle_timeout_ms: u64,

    /// Most TCP connections per core; more are closed at once.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub tcp_max_connections: usize,

    /// How UDP is read and written: `batched` (recvmmsg/sendmmsg) or
    /// `glommio` (one recvmsg and sendmsg per datagram).
    #[arg(long, value_enum, value_name = "MODE", default_value = "batched")]
    pub udp_io: UdpIo,

    /// Log filter (`info`, `debug`, `kubewire=debug,...`); RUST_LOG wins if set.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// How the UDP path does its I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum UdpIo {
    /// `recvmmsg`/`sendmmsg` on the raw socket, driven inside the executor.
    Batched,
    /// glommio's `recv_from`/`send_to`.
    Glommio,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
