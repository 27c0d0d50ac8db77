//! Resolving names outside the cluster zones: which upstreams serve which
//! zone ([`ForwardPlan`], built once from the configuration), and the
//! per-core forwarder that sends the queries ([`forward::Forwarder`]).

pub mod autopath;
pub mod cache;
pub mod chase;
pub mod forward;
pub mod probe;
pub mod resolver;
pub mod tcp;
pub mod udp_pool;

use crate::operations::config::{Forward, Policy};
use kubewire_wire::NameBuf;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// An error and its causes, as one line: `outer: cause: cause`.
pub(crate) struct Chain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

/// An upstream that the configuration names but that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSpecError {
    /// Neither an address nor a path.
    #[error("{0:?} is not an upstream: write IP, IP:PORT, [IPv6]:PORT or a resolv.conf path")]
    Syntax(String),
    /// A `tls://` upstream whose address does not parse.
    #[error(
        "{0:?} is not a DNS over TLS upstream: write tls://IP or tls://IP:PORT (port 853 if none)"
    )]
    Tls(String),
    /// A resolv.conf that cannot be read.
    #[error("{path}: cannot read it for its nameservers: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A resolv.conf without nameservers.
    #[error("{0}: has no nameserver lines; name the upstreams in forward.to instead")]
    NoNameservers(String),
}

/// An upstream server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    /// DNS over TLS (RFC 7858), on a kept TCP connection.
    pub tls: bool,
    /// Plain DNS over TCP only (node-local's cluster upstream, as
    /// NodeLocal DNSCache's `force_tcp`, to keep DNS out of conntrack).
    pub tcp: bool,
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tls {
            write!(f, "tls://{}", self.addr)
        } else if self.tcp {
            write!(f, "tcp://{}", self.addr)
        } else {
            write!(f, "{}", self.addr)
        }
    }
}

fn plain(addr: SocketAddr) -> Upstream {
    Upstream {
        addr,
        tls: false,
        tcp: false,
    }
}

/// Parses one upstream entry: an address (port 53 if none is given), a
/// `dns://` address, a `tls://` address (port 853 if none is given), or a
/// resolv.conf path (every `nameserver` in it).
pub fn parse_upstream(text: &str) -> Result<Vec<Upstream>, UpstreamSpecError> {
    let text = text.trim();
    if text.starts_with('/') {
        let contents = std::fs::read_to_string(text).map_err(|source| UpstreamSpecError::Read {
            path: text.to_string(),
            source,
        })?;
        let servers: Vec<Upstream> = contents
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                (words.next()? == "nameserver").then_some(())?;
                // A zone index (fe80::1%eth0) is not kept: link-local
                // upstreams are not supported.
                let address = words.next()?.split('%').next()?;
                address.parse::<IpAddr>().ok()
            })
            .map(|ip| plain(SocketAddr::new(ip, 53)))
            .collect();
        if servers.is_empty() {
            return Err(UpstreamSpecError::NoNameservers(text.to_string()));
        }
        return Ok(servers);
    }
    if let Some(address) = text.strip_prefix("tls://") {
        let addr = match address.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 853),
            Err(_) => address
                .parse::<SocketAddr>()
                .map_err(|_| UpstreamSpecError::Tls(text.to_string()))?,
        };
        return Ok(vec![Upstream {
            addr,
            tls: true,
            tcp: false,
        }]);
    }
    let address = text.strip_prefix("dns://").unwrap_or(text);
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Ok(vec![plain(SocketAddr::new(ip, 53))]);
    }
    address
        .parse::<SocketAddr>()
        .map(|a| vec![plain(a)])
        .map_err(|_| UpstreamSpecError::Syntax(text.to_string()))
}

/// Why forwarding cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An upstream entry is unusable.
    #[error("forward: {0}")]
    Upstream(#[from] UpstreamSpecError),
    /// A zone name is not a DNS name.
    #[error("forward: {zone:?} is not a DNS name: {source}")]
    Zone {
        /// The zone.
        zone: String,
        /// Why.
        #[source]
        source: kubewire_wire::NameError,
    },
    /// `tls://` upstreams, and no `forward.tls_servername`.
    #[error(
        "forward: tls:// upstreams need forward.tls_servername, the name their certificate is for (such as \"dns.quad9.net\")"
    )]
    NoServerName,
    /// The TLS settings cannot be used.
    #[error("forward: {0}")]
    Tls(String),
    /// Every upstream of a zone is kubewire itself.
    #[error(
        "forward: every upstream of zone {zone:?} is one of kubewire's own listen addresses, a forwarding loop; \
         name a resolver that is not kubewire (a resolv.conf that points at 127.0.0.53 or at this node's kubewire is the usual cause)"
    )]
    OnlyLoops {
        /// The zone.
        zone: String,
    },
}

/// A forward zone and its upstreams.
#[derive(Debug, Clone)]
pub struct Route {
    /// The zone, lowercase.
    pub zone: NameBuf,
    /// Indexes into [`ForwardPlan::upstreams`], in the configured order.
    pub upstreams: Vec<usize>,
}

/// What forwarding does, fixed at start: shared by every core.
#[derive(Debug)]
pub struct ForwardPlan {
    /// The loop probes, one per zone and upstream.
    pub probes: probe::LoopProbes,
    /// Every distinct upstream.
    pub upstreams: Vec<Upstream>,
    /// For `tls://` upstreams: the client configuration and the name the
    /// certificates must be for.
    pub tls: Option<TlsSettings>,
    /// Forward zones, longest first.
    routes: Vec<Route>,
    /// Zones never forwarded.
    except: Vec<NameBuf>,
    /// Upstream order.
    pub policy: Policy,
    /// One attempt's wait.
    pub timeout: Duration,
    /// Attempts per query.
    pub max_attempts: u32,
    /// Failures that mark an upstream down (0: never).
    pub max_fails: u32,
    /// Health-check period of a down upstream.
    pub health_check: Duration,
    /// SERVFAIL at once when every upstream is down.
    pub failfast: bool,
    /// In-flight cap per core.
    pub max_concurrent: usize,
    /// TCP only.
    pub force_tcp: bool,
    /// No TCP retry after TC.
    pub prefer_udp: bool,
}

impl ForwardPlan {
    /// Builds the plan from `[forward]`, or `None` when nothing is
    /// forwarded. `tcp_zones` are zones whose upstreams are asked over TCP
    /// only (node-local's forwarded cluster zones). An upstream that is one
    /// of `listen` is refused with an error line; a zone left with no
    /// upstream stops the start.
    pub fn build(
        config: &Forward,
        tcp_zones: &[(String, Vec<String>)],
        listen: &[SocketAddr],
    ) -> Result<Option<ForwardPlan>, PlanError> {
        if !config.enabled() && tcp_zones.is_empty() {
            return Ok(None);
        }
        let mut upstreams: Vec<Upstream> = Vec::new();
        let mut routes = Vec::new();
        let zones = (!config.to.is_empty())
            .then(|| (".".to_string(), config.to.clone(), false))
            .into_iter()
            .chain(
                config
                    .stub_domains
                    .iter()
                    .map(|(z, u)| (z.clone(), u.clone(), false)),
            )
            .chain(tcp_zones.iter().map(|(z, u)| (z.clone(), u.clone(), true)));
        for (zone_text, entries, tcp_only) in zones {
            let zone = parse_zone(&zone_text)?;
            let mut indexes = Vec::new();
            for entry in &entries {
                for mut address in parse_upstream(entry)? {
                    address.tcp = tcp_only && !address.tls;
                    if is_own_address(address.addr, listen) {
                        tracing::error!(
                            upstream = %address,
                            zone = %zone_text,
                            "refusing this upstream: it is one of kubewire's own listen addresses, so forwarding to it \
                             would loop; name a resolver that is not kubewire"
                        );
                        continue;
                    }
                    let index = match upstreams.iter().position(|u| *u == address) {
                        Some(index) => index,
                        None => {
                            upstreams.push(address);
                            upstreams.len() - 1
                        }
                    };
                    if !indexes.contains(&index) {
                        indexes.push(index);
                    }
                }
            }
            if indexes.is_empty() {
                return Err(PlanError::OnlyLoops { zone: zone_text });
            }
            routes.push(Route {
                zone,
                upstreams: indexes,
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.zone.wire_len()));
        let probe_routes: Vec<(NameBuf, Vec<usize>)> = routes
            .iter()
            .map(|r| (r.zone, r.upstreams.clone()))
            .collect();
        let tls = if upstreams.iter().any(|u| u.tls) {
            Some(TlsSettings::new(
                &config.tls_servername,
                &config.tls_ca_file,
            )?)
        } else {
            None
        };
        let except = config
            .except
            .iter()
            .map(|z| parse_zone(z))
            .collect::<Result<_, _>>()?;
        Ok(Some(ForwardPlan {
            probes: probe::LoopProbes::new(&probe_routes, upstreams.len()),
            upstreams,
            tls,
            routes,
            except,
            policy: config.policy,
            timeout: Duration::from_millis(config.timeout_ms),
            max_attempts: config.max_attempts,
            max_fails: config.max_fails,
            health_check: Duration::from_millis(config.health_check_ms),
            failfast: config.failfast_all_unhealthy_upstreams,
            max_concurrent: config.max_concurrent_per_core,
            force_tcp: config.force_tcp,
            prefer_udp: config.prefer_udp,
        }))
    }

    /// The route for a lowercase name: the longest forward zone holding it,
    /// unless an `except` zone holds it. `None`: not forwarded.
    pub fn route(&self, key: &NameBuf) -> Option<&Route> {
        if self.except.iter().any(|zone| key.ends_with(zone)) {
            return None;
        }
        self.routes.iter().find(|route| key.ends_with(&route.zone))
    }
}

/// What DNS over TLS needs: shared by every core.
#[derive(Clone)]
pub struct TlsSettings {
    /// The rustls client configuration (ring, TLS 1.2 and 1.3).
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// The name the upstreams' certificates must be for.
    pub server_name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsSettings {
    /// Trusts the certificates in `ca_file` (PEM), or the system's roots
    /// when it is empty.
    pub fn new(server_name: &str, ca_file: &str) -> Result<TlsSettings, PlanError> {
        if server_name.is_empty() {
            return Err(PlanError::NoServerName);
        }
        let server_name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| {
                PlanError::Tls(format!(
                    "forward.tls_servername {server_name:?} is not a DNS name or IP: {e}"
                ))
            })?;
        let mut roots = rustls::RootCertStore::empty();
        if ca_file.is_empty() {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(PlanError::Tls(
                    "no system root certificates found for tls:// upstreams; install ca-certificates or set forward.tls_ca_file"
                        .into(),
                ));
            }
        } else {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca_file).map_err(|e| {
                PlanError::Tls(format!(
                    "forward.tls_ca_file {ca_file:?} cannot be read: {e}"
                ))
            })?;
            for cert in certs {
                let cert = cert
                    .map_err(|e| PlanError::Tls(format!("forward.tls_ca_file {ca_file:?}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| PlanError::Tls(format!("forward.tls_ca_file {ca_file:?}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(PlanError::Tls(format!(
                    "forward.tls_ca_file {ca_file:?} holds no certificate"
                )));
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PlanError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsSettings {
            config: std::sync::Arc::new(config),
            server_name,
        })
    }
}

/// Time until `deadline`, or `None` once it has passed.
fn time_left(deadline: std::time::Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(std::time::Instant::now())
        .filter(|d| !d.is_zero())
}

fn parse_zone(text: &str) -> Result<NameBuf, PlanError> {
    NameBuf::from_text(text)
        .map(|n| n.to_lowercase())
        .map_err(|source| PlanError::Zone {
            zone: text.to_string(),
            source,
        })
}

/// Whether `upstream` reaches one of our own listen addresses.
fn is_own_address(upstream: SocketAddr, listen: &[SocketAddr]) -> bool {
    listen.iter().any(|own| {
        own.port() == upstream.port()
            && (own.ip() == upstream.ip()
                || (own.ip().is_unspecified()
                    && (upstream.ip().is_loopback() || is_local(upstream.ip()))))
    })
}

/// Whether an address belongs to this host (it can be bound).
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn upstreams_parse_from_addresses_and_resolv_conf() {
        let addrs = |text: &str| -> Vec<String> {
            parse_upstream(text)
                .unwrap()
                .iter()
                .map(|u| u.to_string())
                .collect()
        };
        assert_eq!(addrs("10.0.0.1"), ["10.0.0.1:53"]);
        assert_eq!(addrs("dns://127.0.0.1:5300"), ["127.0.0.1:5300"]);
        assert_eq!(addrs("[::1]:53"), ["[::1]:53"]);
        assert_eq!(addrs("tls://192.0.2.9"), ["tls://192.0.2.9:853"]);
        assert_eq!(addrs("tls://192.0.2.9:8853"), ["tls://192.0.2.9:8853"]);
        assert!(matches!(
            parse_upstream("tls://dns.example"),
            Err(UpstreamSpecError::Tls(_))
        ));
        assert!(matches!(
            parse_upstream("nope"),
            Err(UpstreamSpecError::Syntax(_))
        ));
        let dir = std::env::temp_dir().join(format!("kubewire-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(
            &path,
            "search a.b\nnameserver 192.0.2.1\n# x\nnameserver fe80::1%eth0\noptions ndots:5\n",
        )
        .unwrap();
        assert_eq!(
            addrs(path.to_str().unwrap()),
            ["192.0.2.1:53", "[fe80::1]:53"]
        );
        std::fs::write(&path, "search a.b\n").unwrap();
        assert!(matches!(
            parse_upstream(path.to_str().unwrap()),
            Err(UpstreamSpecError::NoNameservers(_))
        ));
    }

    #[test]
    fn the_longest_zone_wins_and_except_and_loops_are_honoured() {
        let mut config = Forward {
            to: vec!["192.0.2.1".into(), "127.0.0.1:5353".into()],
            except: vec!["private.example".into()],
            ..Forward::default()
        };
        config
            .stub_domains
            .insert("corp.example".into(), vec!["192.0.2.2:5300".into()]);
        let listen = ["127.0.0.1:5353".parse().unwrap()];
        let plan = ForwardPlan::build(&config, &[], &listen).unwrap().unwrap();
        let route = |name: &str| {
            plan.route(&NameBuf::from_text(name).unwrap()).map(|r| {
                r.upstreams
                    .iter()
                    .map(|&i| plan.upstreams[i].addr)
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            route("www.example.com"),
            Some(vec!["192.0.2.1:53".parse().unwrap()])
        );
        assert_eq!(
            route("a.corp.example"),
            Some(vec!["192.0.2.2:5300".parse().unwrap()])
        );
        assert_eq!(route("a.private.example"), None);
        config.to = vec!["127.0.0.1:5353".into()];
        assert!(matches!(
            ForwardPlan::build(&config, &[], &listen),
            Err(PlanError::OnlyLoops { .. })
        ));
        assert!(
            ForwardPlan::build(&Forward::default(), &[], &listen)
                .unwrap()
                .is_none()
        );
    }
}
