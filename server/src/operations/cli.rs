//! Command-line flags and subcommands.
//!
//! Every serving flag is optional: a flag overrides the `--config` file,
//! whose values override the defaults (`kubewire config print` shows them
//! all). Each flag can also be given as an environment variable, named
//! after it: `--ttl` is `KUBEWIRE_TTL`, `--metrics-addr` is
//! `KUBEWIRE_METRICS_ADDR`.

use crate::operations::config::{
    Config, CoreSpec, DnsName, LogFormat, OptionalAddr, SourceKind, UdpIo, UpstreamEntry,
};
use clap::{Parser, Subcommand};
use kubewire_answer::PodMode;
use std::net::SocketAddr;
use std::path::PathBuf;

/// kubewire: a thread-per-core Kubernetes cluster DNS server.
#[derive(Parser, Debug, Clone)]
#[command(name = "kubewire", version, about, long_about = None, args_override_self = true)]
pub struct Cli {
    /// A subcommand; without one, kubewire serves.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Serving flags.
    #[command(flatten)]
    pub flags: Flags,
}

/// Subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Check, print or translate configuration.
    Config {
        /// What to do.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Ask a running kubewire why NAME answers what it answers: the reply,
    /// the objects behind it, why not, and what a pod's resolver tries.
    Explain {
        /// The name.
        name: String,
        /// The record type [default: A].
        #[arg(value_name = "TYPE")]
        qtype: Option<String>,
        /// Walk the search path of this client: a pod's IP, or NAMESPACE/POD.
        #[arg(long, value_name = "POD_IP_OR_NAMESPACE/POD")]
        from: Option<String>,
        /// Where and how to ask.
        #[command(flatten)]
        ask: crate::operations::debug::AskArgs,
    },
    /// Ask a running kubewire who makes the DNS traffic: top names,
    /// namespaces, clients and NXDOMAIN names.
    Top {
        /// Where and how to ask.
        #[command(flatten)]
        ask: crate::operations::debug::AskArgs,
    },
}

/// `kubewire config …`
#[derive(Subcommand, Debug, Clone)]
pub enum ConfigAction {
    /// Validate a config file; exit 0 if it is good, print the error if not.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
    /// Print the effective configuration (defaults, then --config, then
    /// KUBEWIRE_* variables and flags), documented, as TOML.
    Print,
    /// Translate a CoreDNS Corefile (the kubeadm one) into kubewire TOML on
    /// stdout; what cannot be translated is listed on stderr and as comments.
    FromCorefile {
        /// The Corefile.
        file: PathBuf,
    },
}

/// The serving flags. Each overrides its config-file key.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Flags {
    /// A TOML config file (see `kubewire config print`). SIGHUP, or an edit
    /// to the file, reloads the settings that can change live.
    #[arg(long, global = true, value_name = "FILE", env = "KUBEWIRE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Serve the embedded demo cluster (never used unless asked for).
    #[arg(
        long,
        global = true,
        conflicts_with = "manifests",
        env = "KUBEWIRE_DEMO"
    )]
    pub demo: bool,

    /// Serve the objects in a YAML/JSON manifest file, or a directory of them.
    /// The path is watched, and edits are served within milliseconds.
    #[arg(long, global = true, value_name = "PATH", env = "KUBEWIRE_MANIFESTS")]
    pub manifests: Option<PathBuf>,

    /// Kubeconfig for the cluster to serve. Without a source, the cluster is
    /// found from $KUBECONFIG, ~/.kube/config, or the in-cluster service
    /// account, in that order.
    #[arg(long, global = true, value_name = "PATH", conflicts_with_all = ["demo", "manifests"], env = "KUBEWIRE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Serve only these namespaces (comma-separated), as CoreDNS's `namespaces`.
    #[arg(
        long,
        global = true,
        value_name = "NS,...",
        value_delimiter = ',',
        env = "KUBEWIRE_NAMESPACES"
    )]
    pub namespaces: Option<Vec<String>>,

    /// Serve only Services (and their EndpointSlices) matching this label
    /// selector, as CoreDNS's `labels`.
    #[arg(long, global = true, value_name = "SELECTOR", env = "KUBEWIRE_LABELS")]
    pub labels: Option<String>,

    /// After this long without a first sync, answer from what is known
    /// [default: 5000].
    #[arg(
        long,
        global = true,
        value_name = "MS",
        env = "KUBEWIRE_STARTUP_TIMEOUT_MS"
    )]
    pub startup_timeout_ms: Option<u64>,

    /// `/health` address, "" for none [default: 0.0.0.0:8080].
    #[arg(long, global = true, value_name = "ADDR", env = "KUBEWIRE_HEALTH_ADDR")]
    pub health_addr: Option<OptionalAddr>,

    /// `/ready` address, "" for none [default: 0.0.0.0:8181].
    #[arg(long, global = true, value_name = "ADDR", env = "KUBEWIRE_READY_ADDR")]
    pub ready_addr: Option<OptionalAddr>,

    /// Prometheus `/metrics` address, "" for none [default: 0.0.0.0:9153].
    #[arg(
        long,
        global = true,
        value_name = "ADDR",
        env = "KUBEWIRE_METRICS_ADDR"
    )]
    pub metrics_addr: Option<OptionalAddr>,

    /// Read-only debug endpoint for `kubewire explain` and `kubewire top`, such as 127.0.0.1:9155; off by default.
    #[arg(long, global = true, value_name = "ADDR", env = "KUBEWIRE_DEBUG_ADDR")]
    pub debug_addr: Option<OptionalAddr>,

    /// File with the bearer token the debug endpoint asks for.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "KUBEWIRE_DEBUG_TOKEN_FILE"
    )]
    pub debug_token_file: Option<String>,

    /// Most debug requests a second [default: 20].
    #[arg(
        long,
        global = true,
        value_name = "N",
        env = "KUBEWIRE_DEBUG_REQUESTS_PER_SECOND"
    )]
    pub debug_requests_per_second: Option<u32>,

    /// Address to serve DNS on, over UDP and TCP; repeat for several
    /// [default: 127.0.0.1:5353].
    #[arg(
        long = "listen",
        global = true,
        value_name = "ADDR",
        value_delimiter = ',',
        env = "KUBEWIRE_LISTEN"
    )]
    pub listen: Option<Vec<SocketAddr>>,

    /// Serving cores: `all`, a count (`2`) or a CPU list (`0,2-3`) [default: all].
    #[arg(long, global = true, value_name = "N|LIST", env = "KUBEWIRE_CORES")]
    pub cores: Option<CoreSpec>,

    /// Cluster zone; repeat for several [default: cluster.local].
    #[arg(
        long = "zone",
        global = true,
        value_name = "ZONE",
        value_delimiter = ',',
        env = "KUBEWIRE_ZONES"
    )]
    pub zones: Option<Vec<DnsName>>,

    /// TTL of every record, in seconds [default: 5].
    #[arg(long, global = true, value_name = "SECONDS", env = "KUBEWIRE_TTL")]
    pub ttl: Option<u32>,

    /// Pod records: disabled, insecure or verified [default: insecure].
    #[arg(long, global = true, value_name = "MODE", env = "KUBEWIRE_PODS")]
    pub pods: Option<PodMode>,

    /// Name endpoints without a hostname after their pod.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", env = "KUBEWIRE_ENDPOINT_POD_NAMES")]
    pub endpoint_pod_names: Option<bool>,

    /// Close a TCP connection idle this long [default: 10000].
    #[arg(
        long,
        global = true,
        value_name = "MS",
        env = "KUBEWIRE_TCP_IDLE_TIMEOUT_MS"
    )]
    pub tcp_idle_timeout_ms: Option<u64>,

    /// Most TCP connections per core [default: 1024].
    #[arg(
        long,
        global = true,
        value_name = "N",
        env = "KUBEWIRE_TCP_MAX_CONNECTIONS"
    )]
    pub tcp_max_connections: Option<usize>,

    /// Addresses served over DNS over TLS, comma-separated [default: none].
    #[arg(
        long = "tls-listen",
        global = true,
        value_name = "ADDR",
        value_delimiter = ',',
        env = "KUBEWIRE_TLS_LISTEN"
    )]
    pub tls_listen: Option<Vec<SocketAddr>>,

    /// Addresses served over DNS over HTTPS, comma-separated [default: none].
    #[arg(
        long = "https-listen",
        global = true,
        value_name = "ADDR",
        value_delimiter = ',',
        env = "KUBEWIRE_HTTPS_LISTEN"
    )]
    pub https_listen: Option<Vec<SocketAddr>>,

    /// Most HTTP/2 streams at once on one DNS-over-HTTPS connection [default: 100].
    #[arg(
        long,
        global = true,
        value_name = "N",
        env = "KUBEWIRE_HTTPS_MAX_STREAMS"
    )]
    pub https_max_streams: Option<u32>,

    /// Send dnstap to unix:///PATH or tcp://IP:PORT; off by default.
    #[arg(
        long = "dnstap",
        global = true,
        value_name = "TARGET",
        env = "KUBEWIRE_DNSTAP"
    )]
    pub dnstap: Option<String>,

    /// Include the DNS messages in dnstap events.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", env = "KUBEWIRE_DNSTAP_FULL")]
    pub dnstap_full: Option<bool>,

    /// dnstap's identity; the host name by default.
    #[arg(
        long,
        global = true,
        value_name = "TEXT",
        env = "KUBEWIRE_DNSTAP_IDENTITY"
    )]
    pub dnstap_identity: Option<String>,

    /// dnstap's version; kubewire and its version by default.
    #[arg(
        long,
        global = true,
        value_name = "TEXT",
        env = "KUBEWIRE_DNSTAP_VERSION"
    )]
    pub dnstap_version: Option<String>,

    /// dnstap's extra field.
    #[arg(
        long,
        global = true,
        value_name = "TEXT",
        env = "KUBEWIRE_DNSTAP_EXTRA"
    )]
    pub dnstap_extra: Option<String>,

    /// The served certificate chain, PEM.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "KUBEWIRE_TLS_CERT_FILE"
    )]
    pub tls_cert_file: Option<String>,

    /// The served certificate's private key, PEM.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "KUBEWIRE_TLS_KEY_FILE"
    )]
    pub tls_key_file: Option<String>,

    /// CAs a DNS-over-TLS client's certificate must chain to (mutual TLS); none by default.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "KUBEWIRE_TLS_CLIENT_CA_FILE"
    )]
    pub tls_client_ca_file: Option<String>,

    /// Close a TLS connection whose handshake takes longer [default: 5000].
    #[arg(
        long,
        global = true,
        value_name = "MS",
        env = "KUBEWIRE_TLS_HANDSHAKE_TIMEOUT_MS"
    )]
    pub tls_handshake_timeout_ms: Option<u64>,

    /// Check the certificate files for a change this often [default: 2000].
    #[arg(
        long,
        global = true,
        value_name = "MS",
        env = "KUBEWIRE_TLS_RELOAD_CHECK_MS"
    )]
    pub tls_reload_check_ms: Option<u64>,

    /// UDP I/O: `io_uring`, `batched` (recvmmsg/sendmmsg) or `glommio` [default: io_uring].
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "MODE",
        env = "KUBEWIRE_UDP_IO"
    )]
    pub udp_io: Option<UdpIo>,

    /// Upstream servers for names outside the cluster zones (IP, IP:PORT or a
    /// resolv.conf path), comma-separated [default: none]; without, such names get REFUSED.
    #[arg(
        long = "forward",
        global = true,
        value_name = "UPSTREAM",
        value_delimiter = ',',
        env = "KUBEWIRE_FORWARD"
    )]
    pub forward: Option<Vec<UpstreamEntry>>,

    /// After SIGTERM, serve this long with /ready at 503 [default: 5000].
    #[arg(long, global = true, value_name = "MS", env = "KUBEWIRE_LAMEDUCK_MS")]
    pub lameduck_ms: Option<u64>,

    /// Log filter (`info`, `kubewire=debug,...`); RUST_LOG wins if set [default: info].
    #[arg(long, global = true, value_name = "FILTER", env = "KUBEWIRE_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Log format [default: text].
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        env = "KUBEWIRE_LOG_FORMAT"
    )]
    pub log_format: Option<LogFormat>,

    /// Query log: one query in N, 0 for off [default: 0].
    #[arg(
        long,
        global = true,
        value_name = "N",
        env = "KUBEWIRE_QUERY_LOG_SAMPLE"
    )]
    pub query_log_sample: Option<u32>,

    /// Query log rate limit per core [default: 100].
    #[arg(
        long,
        global = true,
        value_name = "N",
        env = "KUBEWIRE_QUERY_LOG_MAX_PER_SECOND"
    )]
    pub query_log_max_per_second: Option<u32>,
}

impl Flags {
    /// Overrides `config` with every flag given.
    pub fn apply(&self, config: &mut Config) {
        if self.demo {
            config.source.kind = SourceKind::Demo;
            config.source.kubeconfig.clear();
        }
        if let Some(path) = &self.manifests {
            config.source.kind = SourceKind::Manifests;
            config.source.manifests = path.display().to_string();
            config.source.kubeconfig.clear();
        }
        if let Some(path) = &self.kubeconfig {
            config.source.kind = SourceKind::Cluster;
            config.source.kubeconfig = path.display().to_string();
        }
        set(&mut config.kubernetes.namespaces, &self.namespaces);
        set(&mut config.kubernetes.labels, &self.labels);
        set(
            &mut config.kubernetes.startup_timeout_ms,
            &self.startup_timeout_ms,
        );
        set(&mut config.kubernetes.pods, &self.pods);
        set(
            &mut config.kubernetes.endpoint_pod_names,
            &self.endpoint_pod_names,
        );
        set(&mut config.http.health_addr, &self.health_addr);
        set(&mut config.http.ready_addr, &self.ready_addr);
        set(&mut config.http.metrics_addr, &self.metrics_addr);
        set(&mut config.http.debug_addr, &self.debug_addr);
        set(&mut config.http.debug_token_file, &self.debug_token_file);
        set(
            &mut config.http.debug_requests_per_second,
            &self.debug_requests_per_second,
        );
        set(&mut config.dns.listen, &self.listen);
        set(&mut config.dns.cores, &self.cores);
        set(&mut config.dns.zones, &self.zones);
        set(&mut config.dns.ttl_seconds, &self.ttl);
        set(&mut config.dns.udp_io, &self.udp_io);
        set(&mut config.tcp.idle_timeout_ms, &self.tcp_idle_timeout_ms);
        set(&mut config.tcp.max_connections, &self.tcp_max_connections);
        set(&mut config.tls.listen, &self.tls_listen);
        set(&mut config.dnstap.to, &self.dnstap);
        set(&mut config.dnstap.full, &self.dnstap_full);
        set(&mut config.dnstap.identity, &self.dnstap_identity);
        set(&mut config.dnstap.version, &self.dnstap_version);
        set(&mut config.dnstap.extra, &self.dnstap_extra);
        set(&mut config.tls.https_listen, &self.https_listen);
        set(&mut config.tls.https_max_streams, &self.https_max_streams);
        set(&mut config.tls.cert_file, &self.tls_cert_file);
        set(&mut config.tls.key_file, &self.tls_key_file);
        set(&mut config.tls.client_ca_file, &self.tls_client_ca_file);
        set(
            &mut config.tls.handshake_timeout_ms,
            &self.tls_handshake_timeout_ms,
        );
        set(&mut config.tls.reload_check_ms, &self.tls_reload_check_ms);
        set(&mut config.lifecycle.lameduck_ms, &self.lameduck_ms);
        set(&mut config.forward.to, &self.forward);
        set(&mut config.log.level, &self.log_level);
        set(&mut config.log.format, &self.log_format);
        set(&mut config.log.query_log_sample, &self.query_log_sample);
        set(
            &mut config.log.query_log_max_per_second,
            &self.query_log_max_per_second,
        );
    }

    /// The effective configuration: defaults, the `--config` file, then
    /// environment variables and flags.
    pub fn config(&self) -> Result<Config, crate::operations::config::ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        self.apply(&mut config);
        config.validate()?;
        Ok(config)
    }
}

fn set<T: Clone>(target: &mut T, value: &Option<T>) {
    if let Some(value) = value {
        *target = value.clone();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::operations::config::KEYS;
    use clap::CommandFactory;

    /// One non-default value per flag (`None`: a switch). A new flag must be
    /// added here, or the tests below fail.
    const SAMPLES: &[(&str, Option<&str>)] = &[
        ("--demo", None),
        ("--manifests", Some("/tmp/manifests")),
        ("--kubeconfig", Some("/tmp/kubeconfig")),
        ("--namespaces", Some("a,b")),
        ("--labels", Some("app=web")),
        ("--startup-timeout-ms", Some("1")),
        ("--health-addr", Some("")),
        ("--ready-addr", Some("")),
        ("--metrics-addr", Some("")),
        ("--debug-addr", Some("127.0.0.1:9155")),
        ("--debug-token-file", Some("/tmp/token")),
        ("--debug-requests-per-second", Some("1")),
        ("--listen", Some("127.0.0.2:53")),
        ("--cores", Some("1")),
        ("--zone", Some("example.test")),
        ("--ttl", Some("7")),
        ("--pods", Some("verified")),
        ("--endpoint-pod-names", Some("true")),
        ("--tcp-idle-timeout-ms", Some("1")),
        ("--tcp-max-connections", Some("1")),
        ("--tls-listen", Some("127.0.0.2:853")),
        ("--dnstap", Some("unix:///tmp/dnstap.sock")),
        ("--dnstap-full", None),
        ("--dnstap-identity", Some("node-1")),
        ("--dnstap-version", Some("v")),
        ("--dnstap-extra", Some("x")),
        ("--https-listen", Some("127.0.0.2:443")),
        ("--https-max-streams", Some("1")),
        ("--tls-cert-file", Some("/tmp/tls.crt")),
        ("--tls-key-file", Some("/tmp/tls.key")),
        ("--tls-client-ca-file", Some("/tmp/ca.crt")),
        ("--tls-handshake-timeout-ms", Some("1")),
        ("--tls-reload-check-ms", Some("1")),
        ("--udp-io", Some("glommio")),
        ("--forward", Some("192.0.2.1")),
        ("--lameduck-ms", Some("1")),
        ("--log-level", Some("debug")),
        ("--log-format", Some("json")),
        ("--query-log-sample", Some("3")),
        ("--query-log-max-per-second", Some("4")),
    ];

    fn flags() -> Vec<String> {
        Cli::command()
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .filter(|&long| long != "config")
            .map(|long| format!("--{long}"))
            .collect()
    }

    /// A config value as a flag's help text writes its default.
    fn as_help(value: &toml::Value) -> String {
        match value {
            toml::Value::String(text) => text.clone(),
            toml::Value::Array(items) if items.is_empty() => "none".into(),
            toml::Value::Array(items) => items.iter().map(as_help).collect::<Vec<_>>().join(","),
            other => other.to_string(),
        }
    }

    #[test]
    fn every_flag_is_a_documented_setting_with_its_default_and_variable() {
        let command = Cli::command();
        let defaults = Config::default().flatten();
        for flag in flags() {
            let owners: Vec<_> = KEYS
                .iter()
                .filter(|s| s.flags.contains(&flag.as_str()))
                .collect();
            assert!(!owners.is_empty(), "{flag} sets no setting in KEYS");
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == flag.strip_prefix("--"))
                .unwrap();
            assert_eq!(
                arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                Some(crate::operations::config::env_var(&flag)),
                "{flag}"
            );
            assert!(crate::operations::config::env_var(&flag).starts_with("KUBEWIRE_"));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            if let Some(default) = help
                .split("[default: ")
                .nth(1)
                .and_then(|rest| rest.split(']').next())
            {
                let value = &defaults[owners[0].key];
                assert_eq!(default, as_help(value), "{flag}'s help states its default");
            }
        }
        for setting in KEYS {
            for flag in setting.flags {
                assert!(
                    flags().iter().any(|f| f == flag),
                    "{} names {flag}, which is not a flag",
                    setting.key
                );
            }
        }
    }

    #[test]
    fn each_flag_sets_exactly_its_settings() {
        let sampled: Vec<&str> = SAMPLES.iter().map(|(flag, _)| *flag).collect();
        for flag in flags() {
            assert!(sampled.contains(&flag.as_str()), "no sample for {flag}");
        }
        for (flag, value) in SAMPLES {
            let mut argv = vec!["kubewire", flag];
            argv.extend(value);
            let cli = Cli::try_parse_from(&argv).unwrap();
            let mut config = Config::default();
            cli.flags.apply(&mut config);
            let changed = config.changed_keys(&Config::default());
            let expected: Vec<&str> = KEYS
                .iter()
                .filter(|s| s.flags.contains(flag))
                .map(|s| s.key)
                .collect();
            // It changes something, and only settings that name it
            // (--kubeconfig leaves the default kind, cluster, as it is).
            assert!(!changed.is_empty(), "{flag} changed nothing");
            assert!(
                changed.iter().all(|key| expected.contains(key)),
                "{flag} changed {changed:?}; its settings are {expected:?}"
            );
        }
    }
}
