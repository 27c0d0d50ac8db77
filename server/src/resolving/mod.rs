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

use crate::operations::config::{DnsName, Forward, Policy, Protocol, Upstream};
use kubewire_wire::NameBuf;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Why forwarding cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// `tls://` upstreams, and no `forward.tls_servername`.
    #[error(
        "forward: tls:// upstreams need forward.tls_servername, the name their certificate is for (such as \"dns.quad9.net\")"
    )]
    NoServerName,
    /// `forward.tls_servername` is neither a DNS name nor an IP.
    #[error("forward.tls_servername {name:?} is not a DNS name or IP")]
    ServerName {
        /// The name.
        name: String,
        /// Why.
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// No `forward.tls_ca_file`, and the system has no roots.
    #[error(
        "no system root certificates found for tls:// upstreams; install ca-certificates or set forward.tls_ca_file"
    )]
    NoSystemRoots,
    /// `forward.tls_ca_file` cannot be read as PEM.
    #[error("forward.tls_ca_file {path:?} cannot be read as PEM certificates")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate in `forward.tls_ca_file` is not a usable root.
    #[error("forward.tls_ca_file {path:?} holds a certificate that is not a usable root")]
    CaCertificate {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// `forward.tls_ca_file` holds no certificate.
    #[error("forward.tls_ca_file {0:?} holds no certificate")]
    EmptyCaFile(String),
    /// rustls refuses its own default protocol versions.
    #[error("forward: the TLS client cannot be set up")]
    TlsClient(#[source] rustls::Error),
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
    pub tls: Option<TlsClient>,
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
        tcp_zones: &[(DnsName, Vec<Upstream>)],
        listen: &[SocketAddr],
    ) -> Result<Option<ForwardPlan>, PlanError> {
        if !config.enabled() && tcp_zones.is_empty() {
            return Ok(None);
        }
        let servers = |entries: &[crate::operations::config::UpstreamEntry]| -> Vec<Upstream> {
            entries
                .iter()
                .flat_map(|e| e.servers().iter().copied())
                .collect()
        };
        let zones = (!config.to.is_empty())
            .then(|| (DnsName::from_static("."), servers(&config.to)))
            .into_iter()
            .chain(
                config
                    .stub_domains
                    .iter()
                    .map(|(zone, entries)| (zone.clone(), servers(entries))),
            )
            .chain(tcp_zones.iter().map(|(zone, upstreams)| {
                // Plain DNS to these goes over TCP alone (TLS stays TLS).
                let tcp = |u: &Upstream| Upstream {
                    protocol: match u.protocol {
                        Protocol::Udp => Protocol::Tcp,
                        other => other,
                    },
                    ..*u
                };
                (zone.clone(), upstreams.iter().map(tcp).collect())
            }));
        let mut upstreams: Vec<Upstream> = Vec::new();
        let mut routes = Vec::new();
        for (zone, addresses) in zones {
            let mut indexes = Vec::new();
            for address in addresses {
                if is_own_address(address.addr, listen) {
                    tracing::error!(
                        upstream = %address,
                        %zone,
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
            if indexes.is_empty() {
                return Err(PlanError::OnlyLoops {
                    zone: zone.to_string(),
                });
            }
            routes.push(Route {
                zone: *zone.name(),
                upstreams: indexes,
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.zone.wire_len()));
        let probe_routes: Vec<(NameBuf, Vec<usize>)> = routes
            .iter()
            .map(|r| (r.zone, r.upstreams.clone()))
            .collect();
        let tls = if upstreams.iter().any(|u| u.protocol == Protocol::Tls) {
            Some(TlsClient::new(&config.tls_servername, &config.tls_ca_file)?)
        } else {
            None
        };
        let except = config.except.iter().map(|zone| *zone.name()).collect();
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
pub struct TlsClient {
    /// The rustls client configuration (ring, TLS 1.2 and 1.3).
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// The name the upstreams' certificates must be for.
    pub server_name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsClient {
    /// Trusts the certificates in `ca_file` (PEM), or the system's roots
    /// when it is empty.
    pub fn new(server_name: &str, ca_file: &str) -> Result<TlsClient, PlanError> {
        if server_name.is_empty() {
            return Err(PlanError::NoServerName);
        }
        let server_name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|source| PlanError::ServerName {
                name: server_name.to_string(),
                source,
            })?;
        let mut roots = rustls::RootCertStore::empty();
        if ca_file.is_empty() {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(PlanError::NoSystemRoots);
            }
        } else {
            use rustls::pki_types::pem::PemObject;
            let pem = |source| PlanError::CaFile {
                path: ca_file.to_string(),
                source,
            };
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca_file).map_err(pem)? {
                roots
                    .add(cert.map_err(pem)?)
                    .map_err(|source| PlanError::CaCertificate {
                        path: ca_file.to_string(),
                        source,
                    })?;
            }
            if roots.is_empty() {
                return Err(PlanError::EmptyCaFile(ca_file.to_string()));
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(PlanError::TlsClient)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClient {
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
    fn the_longest_zone_wins_and_except_and_loops_are_honoured() {
        let mut config = Forward {
            to: vec![
                "192.0.2.1".parse().unwrap(),
                "127.0.0.1:5353".parse().unwrap(),
            ],
            except: vec!["private.example".parse().unwrap()],
            ..Forward::default()
        };
        config.stub_domains.insert(
            "corp.example".parse().unwrap(),
            vec!["192.0.2.2:5300".parse().unwrap()],
        );
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
        config.to = vec!["127.0.0.1:5353".parse().unwrap()];
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
