//! Resolving names outside the cluster zones: which upstreams serve which
//! zone ([`ForwardPlan`], built once from the configuration), and the
//! per-core forwarder that sends the queries ([`forward::Forwarder`]).

pub mod chase;
pub mod forward;
pub mod probe;
pub mod tcp;

use crate::config::{Forward, Policy};
use kubewire_wire::NameBuf;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// An upstream that the configuration names but that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSpecError {
    /// Neither an address nor a path.
    #[error("{0:?} is not an upstream: write IP, IP:PORT, [IPv6]:PORT or a resolv.conf path")]
    Syntax(String),
    /// DNS over TLS is not built yet.
    #[error(
        "{0:?}: DNS over TLS upstreams are not supported yet; name the upstream's plain DNS address"
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

/// Parses one upstream entry: an address (port 53 if none is given), a
/// `dns://` address, or a resolv.conf path (every `nameserver` in it).
pub fn parse_upstream(text: &str) -> Result<Vec<SocketAddr>, UpstreamSpecError> {
    let text = text.trim();
    if text.starts_with('/') {
        let contents = std::fs::read_to_string(text).map_err(|source| UpstreamSpecError::Read {
            path: text.to_string(),
            source,
        })?;
        let servers: Vec<SocketAddr> = contents
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                (words.next()? == "nameserver").then_some(())?;
                // A zone index (fe80::1%eth0) is not kept: link-local
                // upstreams are not supported.
                let address = words.next()?.split('%').next()?;
                address.parse::<IpAddr>().ok()
            })
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
        if servers.is_empty() {
            return Err(UpstreamSpecError::NoNameservers(text.to_string()));
        }
        return Ok(servers);
    }
    if text.starts_with("tls://") {
        return Err(UpstreamSpecError::Tls(text.to_string()));
    }
    let address = text.strip_prefix("dns://").unwrap_or(text);
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, 53)]);
    }
    address
        .parse::<SocketAddr>()
        .map(|a| vec![a])
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
    pub upstreams: Vec<SocketAddr>,
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
    /// forwarded. An upstream that is one of `listen` is refused with an
    /// error line; a zone left with no upstream stops the start.
    pub fn build(
        config: &Forward,
        listen: &[SocketAddr],
    ) -> Result<Option<ForwardPlan>, PlanError> {
        if !config.enabled() {
            return Ok(None);
        }
        let mut upstreams: Vec<SocketAddr> = Vec::new();
        let mut routes = Vec::new();
        let zones = (!config.to.is_empty())
            .then(|| (".".to_string(), config.to.clone()))
            .into_iter()
            .chain(config.stub_domains.clone());
        for (zone_text, entries) in zones {
            let zone = parse_zone(&zone_text)?;
            let mut indexes = Vec::new();
            for entry in &entries {
                for address in parse_upstream(entry)? {
                    if is_own_address(address, listen) {
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
        let except = config
            .except
            .iter()
            .map(|z| parse_zone(z))
            .collect::<Result<_, _>>()?;
        Ok(Some(ForwardPlan {
            probes: probe::LoopProbes::new(&probe_routes, upstreams.len()),
            upstreams,
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
        assert_eq!(
            parse_upstream("10.0.0.1").unwrap(),
            vec!["10.0.0.1:53".parse().unwrap()]
        );
        assert_eq!(
            parse_upstream("dns://127.0.0.1:5300").unwrap(),
            vec!["127.0.0.1:5300".parse().unwrap()]
        );
        assert_eq!(
            parse_upstream("[::1]:53").unwrap(),
            vec!["[::1]:53".parse().unwrap()]
        );
        assert!(matches!(
            parse_upstream("tls://1.1.1.1"),
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
            parse_upstream(path.to_str().unwrap()).unwrap(),
            vec![
                "192.0.2.1:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
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
        let plan = ForwardPlan::build(&config, &listen).unwrap().unwrap();
        let route = |name: &str| {
            plan.route(&NameBuf::from_text(name).unwrap()).map(|r| {
                r.upstreams
                    .iter()
                    .map(|&i| plan.upstreams[i])
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
            ForwardPlan::build(&config, &listen),
            Err(PlanError::OnlyLoops { .. })
        ));
        assert!(
            ForwardPlan::build(&Forward::default(), &listen)
                .unwrap()
                .is_none()
        );
    }
}
