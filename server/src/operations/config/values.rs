//! Values that are parsed when the config loads, so nothing later parses
//! them again or drops a bad one silently: DNS names (zones) and upstream
//! servers. Each keeps the text it was written as, for `config print`.

use kubewire_wire::NameBuf;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt::{self, Display};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// A DNS name as the config writes it (`cluster.local`), parsed: equal,
/// ordered and hashed by its lowercase wire form; shown (`{}` and `{:?}`)
/// as written.
#[derive(Clone)]
pub struct DnsName {
    text: String,
    name: NameBuf,
}

/// A config value that is not a DNS name.
#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not a DNS name: {source}")]
pub struct DnsNameError {
    text: String,
    #[source]
    source: kubewire_wire::NameError,
}

impl DnsName {
    /// A name written in kubewire's own source (`cluster.local`, `.`).
    #[allow(clippy::expect_used)] // a literal of ours that does not parse is our bug
    pub fn from_static(text: &'static str) -> DnsName {
        DnsName {
            text: text.to_string(),
            name: NameBuf::from_text(text)
                .expect("a DNS name literal in kubewire's source")
                .to_lowercase(),
        }
    }

    /// The name, lowercase.
    pub fn name(&self) -> &NameBuf {
        &self.name
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for DnsName {
    type Err = DnsNameError;

    fn from_str(text: &str) -> Result<DnsName, DnsNameError> {
        let name = NameBuf::from_text(text).map_err(|source| DnsNameError {
            text: text.to_string(),
            source,
        })?;
        Ok(DnsName {
            text: text.to_string(),
            name: name.to_lowercase(),
        })
    }
}

impl Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl PartialEq for DnsName {
    fn eq(&self, other: &DnsName) -> bool {
        self.name == other.name
    }
}

impl Eq for DnsName {}

/// `zone == "Cluster.Local."`: the same name, in any case or form (for
/// tests; it parses its argument).
#[cfg(test)]
impl PartialEq<&str> for DnsName {
    fn eq(&self, other: &&str) -> bool {
        NameBuf::from_text(other).is_ok_and(|name| name.to_lowercase() == self.name)
    }
}

impl std::hash::Hash for DnsName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl PartialOrd for DnsName {
    fn partial_cmp(&self, other: &DnsName) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DnsName {
    fn cmp(&self, other: &DnsName) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}

/// How kubewire speaks to an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// UDP, and TCP after a truncated reply (unless `prefer_udp`).
    Udp,
    /// Plain DNS over TCP only (node-local's cluster upstreams, as
    /// NodeLocal DNSCache's `force_tcp`, to keep DNS out of conntrack).
    Tcp,
    /// DNS over TLS (RFC 7858) on a kept connection; the certificate must
    /// be for `forward.tls_servername`.
    Tls,
}

/// An upstream server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    /// How it is asked.
    pub protocol: Protocol,
}

impl Upstream {
    /// Whether queries to it go over a stream (TCP or TLS) alone, given
    /// `forward.force_tcp`.
    pub fn stream_only(&self, force_tcp: bool) -> bool {
        force_tcp || self.protocol != Protocol::Udp
    }
}

impl Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            Protocol::Udp => write!(f, "{}", self.addr),
            Protocol::Tcp => write!(f, "tcp://{}", self.addr),
            Protocol::Tls => write!(f, "tls://{}", self.addr),
        }
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

/// One upstream entry as the config writes it, and the servers it names:
/// an address (port 53 if none is given), a `dns://` address, a `tls://`
/// address (port 853 if none is given), or a resolv.conf path (every
/// `nameserver` in it, read when the config loads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamEntry {
    text: String,
    servers: Vec<Upstream>,
}

impl UpstreamEntry {
    /// The servers it names, in order.
    pub fn servers(&self) -> &[Upstream] {
        &self.servers
    }

    /// The servers a list of entries names, in order.
    pub fn all_servers(entries: &[UpstreamEntry]) -> impl Iterator<Item = Upstream> + '_ {
        entries
            .iter()
            .flat_map(|entry| entry.servers.iter().copied())
    }
}

impl FromStr for UpstreamEntry {
    type Err = UpstreamSpecError;

    fn from_str(text: &str) -> Result<UpstreamEntry, UpstreamSpecError> {
        Ok(UpstreamEntry {
            text: text.to_string(),
            servers: parse_upstream(text)?,
        })
    }
}

impl Display for UpstreamEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_upstream(text: &str) -> Result<Vec<Upstream>, UpstreamSpecError> {
    let text = text.trim();
    let udp = |addr| Upstream {
        addr,
        protocol: Protocol::Udp,
    };
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
            .map(|ip| udp(SocketAddr::new(ip, 53)))
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
            protocol: Protocol::Tls,
        }]);
    }
    let address = text.strip_prefix("dns://").unwrap_or(text);
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Ok(vec![udp(SocketAddr::new(ip, 53))]);
    }
    address
        .parse::<SocketAddr>()
        .map(|a| vec![udp(a)])
        .map_err(|_| UpstreamSpecError::Syntax(text.to_string()))
}

/// Serde through `FromStr` and `Display`, with the error's whole chain as
/// the message (serde keeps only text).
macro_rules! serde_as_text {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$ty, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(|e| {
                    serde::de::Error::custom(crate::operations::failure::Chain(&e))
                })
            }
        }
    )*};
}

serde_as_text!(DnsName, UpstreamEntry);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_compare_by_their_lowercase_wire_form_and_print_as_written() {
        let zone: DnsName = "Cluster.Local.".parse().unwrap();
        assert_eq!(zone, "cluster.local");
        assert_eq!(zone, "cluster.local".parse::<DnsName>().unwrap());
        assert_eq!(zone.to_string(), "Cluster.Local.");
        assert_eq!(zone.name(), &NameBuf::from_text("cluster.local").unwrap());
        assert!("a..b".parse::<DnsName>().is_err());
    }

    #[test]
    fn upstreams_parse_into_one_protocol_each() {
        let tls: UpstreamEntry = "tls://192.0.2.1".parse().unwrap();
        assert_eq!(tls.servers()[0].protocol, Protocol::Tls);
        assert_eq!(tls.servers()[0].addr.port(), 853);
        assert!(tls.servers()[0].stream_only(false));
        let plain: UpstreamEntry = "dns://[2001:db8::1]:5353".parse().unwrap();
        assert_eq!(plain.servers()[0].protocol, Protocol::Udp);
        assert!(!plain.servers()[0].stream_only(false));
        assert!(plain.servers()[0].stream_only(true));
        assert_eq!(plain.to_string(), "dns://[2001:db8::1]:5353");
        assert!(matches!(
            "tls://nowhere".parse::<UpstreamEntry>(),
            Err(UpstreamSpecError::Tls(_))
        ));
        assert!(matches!(
            "/nonexistent/resolv.conf".parse::<UpstreamEntry>(),
            Err(UpstreamSpecError::Read { .. })
        ));
    }

    #[test]
    fn upstreams_parse_from_addresses_and_resolv_conf() {
        let addrs = |text: &str| -> Vec<String> {
            text.parse::<UpstreamEntry>()
                .unwrap()
                .servers()
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
            "tls://dns.example".parse::<UpstreamEntry>(),
            Err(UpstreamSpecError::Tls(_))
        ));
        assert!(matches!(
            "nope".parse::<UpstreamEntry>(),
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
            path.to_str().unwrap().parse::<UpstreamEntry>(),
            Err(UpstreamSpecError::NoNameservers(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
