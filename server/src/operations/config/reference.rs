//! The reference of every config key: its name, what it allows, whether it
//! changes live, its flags and what it does. `config print` writes it as
//! comments, and the loader's errors quote it.

/// One documented config key.
#[derive(Clone, Copy, Debug)]
pub struct KeyDoc {
    /// `section.key`.
    pub key: &'static str,
    /// What values are allowed.
    pub allowed: &'static str,
    /// Whether a reload applies it without a restart.
    pub live: bool,
    /// The command-line flags that set it (each also a `KUBEWIRE_*`
    /// variable); a test proves these and the clap flags agree.
    pub flags: &'static [&'static str],
    /// What it does.
    pub doc: &'static str,
}

const fn key(
    key: &'static str,
    allowed: &'static str,
    live: bool,
    flags: &'static [&'static str],
    doc: &'static str,
) -> KeyDoc {
    KeyDoc {
        key,
        allowed,
        live,
        flags,
        doc,
    }
}

/// Every setting, in the order `config print` writes them.
pub const KEYS: &[KeyDoc] = &[
    key(
        "dns.listen",
        "a list of IP:PORT",
        false,
        &["--listen"],
        "Addresses served over UDP and TCP.",
    ),
    key(
        "dns.cores",
        "\"all\", a count such as \"2\", or a CPU list such as \"0,2-3\" (one CPU: \"1-1\")",
        false,
        &["--cores"],
        "Serving cores, one pinned executor each. \"all\" is every CPU in the affinity mask.",
    ),
    key(
        "dns.zones",
        "a non-empty list of DNS names",
        false,
        &["--zone"],
        "Cluster zones served.",
    ),
    key(
        "dns.ttl_seconds",
        "0 to 3600",
        true,
        &["--ttl"],
        "TTL of every record, and the SOA minimum.",
    ),
    key(
        "dns.udp_io",
        "\"batched\", \"io_uring\" or \"glommio\"",
        false,
        &["--udp-io"],
        "UDP I/O: one io_uring per core (the default; it carries the forwarder's upstream sockets too: the cheapest forwarded miss), recvmmsg/sendmmsg batches (what io_uring falls back to), or glommio's one-datagram calls.",
    ),
    key(
        "kubernetes.pods",
        "\"disabled\", \"insecure\" or \"verified\"",
        false,
        &["--pods"],
        "Pod records, as CoreDNS's `pods` option.",
    ),
    key(
        "kubernetes.endpoint_pod_names",
        "true or false",
        true,
        &["--endpoint-pod-names"],
        "Name endpoints without a hostname after their pod.",
    ),
    key(
        "kubernetes.ignore_empty_service",
        "true or false",
        true,
        &[],
        "A ClusterIP Service with no ready endpoint is NXDOMAIN, as if it did not exist (CoreDNS's `ignore_empty_service`), so a client's search list goes on; its cluster IPs' PTR records stay.",
    ),
    key(
        "kubernetes.zonal",
        "true or false",
        true,
        &[],
        "Topology-zone names for headless Services, as CoreDNS's `zonal`: `<zone>.pin._zone.<svc>.<ns>.svc.<cluster-zone>` answers the ready endpoints whose EndpointSlice `zone` is `<zone>` (NODATA when none is), and `<zone>.prefer._zone.…` those, or every endpoint when none is in the zone.",
    ),
    key(
        "kubernetes.autopath",
        "true or false",
        false,
        &[],
        "Complete a pod's search path on the server, as CoreDNS's `autopath @kubernetes`: a query for the first search candidate of the namespace whose pod sent it is answered from the first candidate that is not NXDOMAIN, behind a CNAME. Watches Pods (in node-local mode, only this node's, by $NODE_NAME).",
    ),
    key(
        "kubernetes.autopath_resolv_conf",
        "a resolv.conf path; empty means none",
        false,
        &[],
        "Autopath tries this file's search domains after the cluster's, as CoreDNS reads its own pod's resolv.conf.",
    ),
    key(
        "kubernetes.namespaces",
        "a list of namespace names; empty means all",
        true,
        &["--namespaces"],
        "Serve only these namespaces, as CoreDNS's `namespaces` (cluster and manifests sources).",
    ),
    key(
        "kubernetes.labels",
        "a label selector such as \"app=web,tier!=db\"; empty means all",
        true,
        &["--labels"],
        "Serve only Services (and their EndpointSlices) matching this, as CoreDNS's `labels` (cluster and manifests sources).",
    ),
    key(
        "kubernetes.startup_timeout_ms",
        "milliseconds",
        false,
        &["--startup-timeout-ms"],
        "After this long without a first sync, answer from what is known; /ready still waits.",
    ),
    key(
        "kubernetes.fallthrough",
        "a list of zones; \".\" means every zone; empty means none",
        false,
        &[],
        "In these zones, a name that no object answers goes on to forwarding instead of NXDOMAIN, as CoreDNS's `fallthrough`. Reverse names no object owns are always forwarded.",
    ),
    key(
        "kubernetes.multicluster",
        "a list of zones that are also in dns.zones, such as [\"clusterset.local\"]; empty means none",
        false,
        &[],
        "Answer these zones from the Multi-Cluster Services API, as CoreDNS's `multicluster`: `<svc>.<ns>.svc.<zone>` from ServiceImports (multicluster.x-k8s.io/v1alpha1: ClusterSetIP `spec.ips`, or a headless import's ready endpoints in every cluster), SRV, and `<endpoint>.<cluster>.<svc>.<ns>.svc.<zone>` from the EndpointSlices labelled multicluster.kubernetes.io/service-name and source-cluster. Local Services are not answered there. Watches ServiceImports; without their CRD, says so and serves the other zones.",
    ),
    key(
        "k8s_external.zones",
        "a list of zones; empty means off",
        true,
        &[],
        "Serve Services' externalIPs and load balancer ingress addresses (never cluster IPs) as `<svc>.<ns>.<zone>` in these zones, with SRV `_port._proto.<svc>.<ns>.<zone>`, an SOA and NS at the apex and `ns1.<apex>.<zone>`, as CoreDNS's `k8s_external`. A load balancer known only by hostname answers with a CNAME to it. A reverse zone listed (such as in-addr.arpa) serves the external IPs' PTR records.",
    ),
    key(
        "k8s_external.apex",
        "a DNS label",
        true,
        &[],
        "The external zones' name server is `ns1.<apex>.<zone>`, and their SOA's mailbox `hostmaster.<apex>.<zone>`.",
    ),
    key(
        "k8s_external.ttl_seconds",
        "0 to 3600",
        true,
        &[],
        "TTL of external records, and the external SOA's TTL and minimum.",
    ),
    key(
        "k8s_external.headless",
        "true or false",
        true,
        &[],
        "A headless Service without external addresses answers in the external zones with its ready endpoints, and `<endpoint>.<svc>.<ns>.<zone>` names each.",
    ),
    key(
        "k8s_external.fallthrough",
        "a list of zones; \".\" means every external zone; empty means none",
        true,
        &[],
        "In these external zones, a name no Service answers goes on to forwarding instead of NXDOMAIN.",
    ),
    key(
        "source.kind",
        "\"cluster\", \"manifests\" or \"demo\"",
        false,
        &["--demo", "--manifests", "--kubeconfig"],
        "Where objects come from. A cluster that cannot be reached is an error, never demo data.",
    ),
    key(
        "source.kubeconfig",
        "a file path; empty means $KUBECONFIG, ~/.kube/config, then in-cluster",
        false,
        &["--kubeconfig"],
        "Kubeconfig for the cluster source.",
    ),
    key(
        "source.manifests",
        "a file or directory path",
        false,
        &["--manifests"],
        "Manifests for the manifests source, watched for edits.",
    ),
    key(
        "http.health_addr",
        "IP:PORT, :PORT, or \"\" for none",
        false,
        &["--health-addr"],
        "/health answers 200 while the process serves.",
    ),
    key(
        "http.ready_addr",
        "IP:PORT, :PORT, or \"\" for none",
        false,
        &["--ready-addr"],
        "/ready answers 200 once every core holds the first sync, 503 before and in lameduck.",
    ),
    key(
        "http.metrics_addr",
        "IP:PORT, :PORT, or \"\" for none (no counting at all)",
        false,
        &["--metrics-addr"],
        "Prometheus /metrics, with CoreDNS's metric names.",
    ),
    key(
        "http.debug_addr",
        "IP:PORT, or \"\" for none (such as 127.0.0.1:9155)",
        false,
        &["--debug-addr"],
        "The read-only debug endpoint that `kubewire explain` and `kubewire top` ask: why a name answers what it answers, and who makes the traffic. Off by default; an address other than loopback needs http.debug_token_file.",
    ),
    key(
        "http.debug_token_file",
        "a path to a file holding a token, or empty",
        false,
        &["--debug-token-file"],
        "When set, the debug endpoint asks for `Authorization: Bearer <token>` (the file's first line); `kubewire explain` reads the same file with --token-file.",
    ),
    key(
        "http.debug_requests_per_second",
        "at least 1",
        false,
        &["--debug-requests-per-second"],
        "Most debug requests a second, over all clients; more get 429.",
    ),
    key(
        "lifecycle.lameduck_ms",
        "milliseconds",
        false,
        &["--lameduck-ms"],
        "After SIGTERM, keep serving this long with /ready at 503, then stop; SIGINT stops at once.",
    ),
    key(
        "log.level",
        "a tracing filter such as \"info\" or \"info,kubewire::sources::control_plane=debug\"",
        true,
        &["--log-level"],
        "Log filter; RUST_LOG wins if set.",
    ),
    key(
        "log.format",
        "\"text\" or \"json\"",
        false,
        &["--log-format"],
        "Log line format.",
    ),
    key(
        "log.query_log_sample",
        "0 (off) or N to log one query in N",
        true,
        &["--query-log-sample"],
        "Query log: client, name, type, RCODE and duration, at info under target kubewire::query.",
    ),
    key(
        "log.query_log_max_per_second",
        "lines per second per core",
        true,
        &["--query-log-max-per-second"],
        "Rate limit of the query log.",
    ),
    key(
        "tcp.idle_timeout_ms",
        "milliseconds, at least 1",
        false,
        &["--tcp-idle-timeout-ms"],
        "Close a TCP connection idle this long.",
    ),
    key(
        "tcp.max_connections",
        "at least 1",
        false,
        &["--tcp-max-connections"],
        "Most TCP connections per core; more are closed at once.",
    ),
    key(
        "tls.listen",
        "a list of IP:PORT; empty: none",
        false,
        &["--tls-listen"],
        "Addresses served over DNS over TLS (RFC 7858, ALPN \"dot\", port 853), as CoreDNS's `tls://.:853` server block: the same answers, forwarding and cache as UDP and TCP, under the tcp.* limits. Needs tls.cert_file and tls.key_file.",
    ),
    key(
        "tls.https_listen",
        "a list of IP:PORT; empty: none",
        false,
        &["--https-listen"],
        "Addresses served over DNS over HTTPS (RFC 8484: GET with ?dns= and POST of application/dns-message at /dns-query; HTTP/2 or HTTP/1.1 by ALPN), as CoreDNS's `https://.:443` server block: the same answers as UDP and TCP, under the tcp.* limits. Needs tls.cert_file and tls.key_file.",
    ),
    key(
        "tls.https_max_streams",
        "at least 1",
        false,
        &["--https-max-streams"],
        "Most HTTP/2 streams (queries in flight) at once on one DNS-over-HTTPS connection.",
    ),
    key(
        "tls.cert_file",
        "a path to a PEM certificate chain, leaf first",
        false,
        &["--tls-cert-file"],
        "The served certificate (a Kubernetes TLS Secret's tls.crt). Reloaded when the file changes; a bad new one keeps the old, with an error logged.",
    ),
    key(
        "tls.key_file",
        "a path to a PEM private key",
        false,
        &["--tls-key-file"],
        "The certificate's private key (tls.key). Reloaded with the certificate.",
    ),
    key(
        "tls.client_ca_file",
        "a path to PEM CA certificates, or empty",
        false,
        &["--tls-client-ca-file"],
        "When set, clients must present a certificate that chains to one of these (mutual TLS, as CoreDNS's `tls CERT KEY CA`). Reloaded with the certificate.",
    ),
    key(
        "tls.handshake_timeout_ms",
        "milliseconds, at least 1",
        false,
        &["--tls-handshake-timeout-ms"],
        "Close a connection whose TLS handshake has not finished within this (a slowloris handshake).",
    ),
    key(
        "tls.reload_check_ms",
        "milliseconds, at least 1",
        false,
        &["--tls-reload-check-ms"],
        "How often the certificate, key and client CA files are checked for a change.",
    ),
    key(
        "dnstap.to",
        "unix:///PATH or tcp://IP:PORT; empty: off",
        false,
        &["--dnstap"],
        "Send every query and reply (CLIENT_QUERY, CLIENT_RESPONSE) and every upstream exchange (FORWARDER_QUERY, FORWARDER_RESPONSE) as dnstap in Frame Streams, as CoreDNS's `dnstap` plugin. Events that cannot be sent at once are dropped and counted (coredns_dnstap_dropped_total); queries never wait.",
    ),
    key(
        "dnstap.full",
        "true or false",
        false,
        &["--dnstap-full"],
        "Include the DNS messages themselves (CoreDNS's `full`).",
    ),
    key(
        "dnstap.identity",
        "text; empty: the host name",
        false,
        &["--dnstap-identity"],
        "dnstap's identity field.",
    ),
    key(
        "dnstap.version",
        "text; empty: kubewire and its version",
        false,
        &["--dnstap-version"],
        "dnstap's version field.",
    ),
    key(
        "dnstap.extra",
        "text; empty: none",
        false,
        &["--dnstap-extra"],
        "dnstap's extra field.",
    ),
    key(
        "forward.to",
        "a list of upstreams: IP, IP:PORT, [IPv6]:PORT, tls://IP[:PORT] (DNS over TLS, port 853), or a resolv.conf path such as \"/etc/resolv.conf\"; empty means no forwarding",
        false,
        &["--forward"],
        "Upstream servers for every name outside the cluster zones, as CoreDNS's `forward .`. Empty: such names get REFUSED.",
    ),
    key(
        "forward.stub_domains",
        "a table of zone = [upstreams], such as { \"corp.example\" = [\"10.0.0.1\"] }",
        false,
        &[],
        "Upstreams per zone, as kube-dns's stubDomains or CoreDNS's `forward ZONE`; the longest matching zone wins over forward.to.",
    ),
    key(
        "forward.except",
        "a list of DNS names",
        false,
        &[],
        "Zones never forwarded; their names get REFUSED, as CoreDNS's `except`.",
    ),
    key(
        "forward.policy",
        "\"random\", \"round_robin\" or \"sequential\"",
        false,
        &[],
        "The order in which a query tries a zone's upstreams, as CoreDNS's `policy`.",
    ),
    key(
        "forward.timeout_ms",
        "milliseconds, at least 1",
        false,
        &[],
        "How long one attempt waits for an upstream's reply before the next upstream is tried.",
    ),
    key(
        "forward.max_attempts",
        "at least 1",
        false,
        &[],
        "Attempts per query, each on the next upstream; then SERVFAIL. A client waits at most timeout_ms times this.",
    ),
    key(
        "forward.max_fails",
        "0 (never mark down) or more",
        false,
        &[],
        "Consecutive failures that mark an upstream down, as CoreDNS's `max_fails`.",
    ),
    key(
        "forward.health_check_ms",
        "milliseconds, at least 1",
        false,
        &[],
        "How often an upstream marked down is sent `. IN NS`; it is up again when it answers, as CoreDNS's `health_check`.",
    ),
    key(
        "forward.failfast_all_unhealthy_upstreams",
        "true or false",
        false,
        &[],
        "With every upstream down, answer SERVFAIL at once instead of trying one anyway.",
    ),
    key(
        "forward.max_concurrent_per_core",
        "at least 1",
        false,
        &[],
        "Forwarded queries in flight per serving core; above it a query gets REFUSED and is counted, as CoreDNS's `max_concurrent`.",
    ),
    key(
        "forward.force_tcp",
        "true or false",
        false,
        &[],
        "Send every upstream query over TCP (NodeLocal DNSCache does, to keep DNS out of conntrack).",
    ),
    key(
        "forward.prefer_udp",
        "true or false",
        false,
        &[],
        "Do not retry a truncated UDP reply over TCP; pass it on with TC set, as CoreDNS's `prefer_udp`.",
    ),
    key(
        "forward.tls_servername",
        "a DNS name; needed with tls:// upstreams",
        false,
        &[],
        "The name tls:// upstreams' certificates must be for, as CoreDNS's `tls_servername`.",
    ),
    key(
        "forward.tls_ca_file",
        "a PEM file path; empty means the system's root certificates",
        false,
        &[],
        "The CAs trusted for tls:// upstreams.",
    ),
    key(
        "cache.enabled",
        "true or false",
        false,
        &[],
        "Cache forwarded answers, pre-encoded, node-wide: one upstream query per name per TTL. Cluster names are never cached; they are always live.",
    ),
    key(
        "cache.max_ttl_s",
        "seconds, at least 1",
        false,
        &[],
        "Positive answers are cached at most this long, as the TTL of CoreDNS's `cache 30` (kubeadm's) or `success`.",
    ),
    key(
        "cache.min_ttl_s",
        "seconds, at most max_ttl_s",
        false,
        &[],
        "Positive answers are cached at least this long (CoreDNS's MINTTL, 5 s).",
    ),
    key(
        "cache.denial_max_ttl_s",
        "seconds, at least 1",
        false,
        &[],
        "NXDOMAIN and NODATA are cached for the smaller of the SOA's TTL and MINIMUM (RFC 2308), at most this long (CoreDNS's `denial`; `cache 30` sets 30).",
    ),
    key(
        "cache.denial_min_ttl_s",
        "seconds, at most denial_max_ttl_s",
        false,
        &[],
        "Negative answers are cached at least this long. A negative answer without an SOA is never cached.",
    ),
    key(
        "cache.servfail_ttl_s",
        "seconds, 0 to 300",
        false,
        &[],
        "An upstream's SERVFAIL is cached this long; 0 turns it off (CoreDNS's `servfail`).",
    ),
    key(
        "cache.max_entries",
        "at least 1",
        false,
        &[],
        "Most cached answers; above it the least recently used are evicted. Every core holds the same entries.",
    ),
    key(
        "cache.max_bytes",
        "bytes, at least 65536",
        false,
        &[],
        "Most bytes of cached answers; above it the least recently used are evicted.",
    ),
    key(
        "cache.prefetch_amount",
        "0 (off) or more",
        false,
        &[],
        "An entry hit this many times, each within prefetch_window_s of the last, is refreshed before it expires (CoreDNS's `prefetch AMOUNT`).",
    ),
    key(
        "cache.prefetch_window_s",
        "seconds, at least 1",
        false,
        &[],
        "Hits further apart than this start the prefetch count again (CoreDNS's prefetch DURATION).",
    ),
    key(
        "cache.prefetch_percent",
        "10 to 90",
        false,
        &[],
        "A popular entry is refreshed when this share of its TTL is left (CoreDNS's prefetch PERCENTAGE).",
    ),
    key(
        "cache.serve_stale_s",
        "seconds; 0 turns it off",
        false,
        &[],
        "An expired entry may be served this long after it expired while its upstreams fail (RFC 8767; CoreDNS's `serve_stale`).",
    ),
    key(
        "cache.serve_stale_mode",
        "\"immediate\" or \"verify\"",
        false,
        &[],
        "immediate: an expired entry is answered at once and refreshed behind. verify: the upstream is asked first, and the stale entry answers only if it fails.",
    ),
    key(
        "cache.stale_ttl_s",
        "seconds",
        false,
        &[],
        "The TTL of a stale answer (RFC 8767 suggests 30).",
    ),
    key(
        "cache.keep_ttl",
        "true or false",
        false,
        &[],
        "Answer hits with the TTLs as stored, not lowered by the entry's age (CoreDNS's `keepttl`).",
    ),
    key(
        "node_local.enabled",
        "true or false",
        false,
        &[],
        "Run as the node's DNS cache (NodeLocal DNSCache's job): put node_local.addresses on a dummy interface, keep DNS to them out of conntrack, and serve them (list them in dns.listen). Needs CAP_NET_ADMIN. dns.listen may then be shared with a second instance (SO_REUSEPORT), as an HA pair.",
    ),
    key(
        "node_local.addresses",
        "a list of IPs; default [\"169.254.20.10\"], plus the kube-dns ClusterIP to take over its address",
        false,
        &[],
        "Addresses put on the interface, as node-cache's -localip.",
    ),
    key(
        "node_local.interface",
        "an interface name of 1 to 15 characters",
        false,
        &[],
        "The interface created to hold the addresses (node-cache's -interfacename).",
    ),
    key(
        "node_local.interface_kind",
        "\"dummy\" or \"bridge\"",
        false,
        &[],
        "dummy, as node-cache; bridge (with no ports) where the kernel has no dummy driver.",
    ),
    key(
        "node_local.notrack",
        "\"auto\", \"nftables\", \"iptables\" or \"off\"",
        false,
        &[],
        "Rules in the raw table that keep DNS to and from the addresses out of conntrack. auto: nftables where `nft` works, else iptables.",
    ),
    key(
        "node_local.skip_teardown",
        "true or false",
        false,
        &[],
        "Leave the interface and rules at exit, for the second instance of an HA pair (node-cache's -skipteardown).",
    ),
    key(
        "node_local.check_interval_s",
        "seconds, at least 1",
        false,
        &[],
        "How often the interface and rules are checked and repaired (node-cache's -syncinterval); failures count in coredns_nodecache_setup_errors_total.",
    ),
    key(
        "node_local.cluster_names",
        "\"watch\" or \"forward\"",
        false,
        &[],
        "watch: answer cluster names from this instance's own source, live. forward: send the cluster zones to kube-dns over TCP and cache them, as NodeLocal DNSCache does (no API access needed).",
    ),
    key(
        "node_local.cluster_upstreams",
        "a list of upstreams (IP or IP:PORT); empty means node_local.upstream_service",
        false,
        &[],
        "Where forward mode sends the cluster zones, always over TCP.",
    ),
    key(
        "node_local.upstream_service",
        "a Service name",
        false,
        &[],
        "In forward mode without cluster_upstreams, the Service whose <NAME>_SERVICE_HOST variable gives the address (node-cache's -upstreamsvc).",
    ),
];

/// The environment variable of a flag (`--ttl`: `KUBEWIRE_TTL`), as clap
/// declares it.
pub fn env_var(flag: &str) -> String {
    let command = <crate::operations::cli::Cli as clap::CommandFactory>::command();
    command
        .get_arguments()
        .find(|arg| arg.get_long() == flag.strip_prefix("--"))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(super) fn find_key(key: &str) -> Option<&'static KeyDoc> {
    KEYS.iter().find(|s| s.key == key)
}

pub(super) fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for s in KEYS {
        let section = section_of(s.key);
        if !out.contains(&section) {
            out.push(section);
        }
    }
    out
}

pub(super) fn section_of(key: &'static str) -> &'static str {
    key.split_once('.').map_or(key, |(section, _)| section)
}

pub(super) fn keys_of(section: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter_map(|s| {
            let (sec, key) = s.key.split_once('.')?;
            (sec == section).then_some(key)
        })
        .collect()
}
