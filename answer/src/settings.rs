//! What the compiler needs to know besides the objects.

use crate::model::ObjectKey;
use kubewire_wire::NameBuf;
use std::net::IpAddr;
use std::str::FromStr;

/// How pod records (`a-b-c-d.<ns>.pod.<zone>`) are answered, as CoreDNS's
/// `pods` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PodMode {
    /// No pod records: NXDOMAIN.
    Disabled,
    /// Any well-formed dashed IP answers with that IP.
    #[default]
    Insecure,
    /// Only IPs of pods in that namespace answer.
    Verified,
}

impl FromStr for PodMode {
    type Err = String;
    fn from_str(text: &str) -> Result<PodMode, String> {
        match text {
            "disabled" => Ok(PodMode::Disabled),
            "insecure" => Ok(PodMode::Insecure),
            "verified" => Ok(PodMode::Verified),
            other => Err(format!(
                "pod mode {other:?} is not one of: disabled, insecure, verified"
            )),
        }
    }
}

impl std::fmt::Display for PodMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PodMode::Disabled => "disabled",
            PodMode::Insecure => "insecure",
            PodMode::Verified => "verified",
        })
    }
}

/// Compiler settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The cluster zones served, `cluster.local` by default.
    pub zones: Vec<NameBuf>,
    /// Serve PTR records under `in-addr.arpa` and `ip6.arpa` for the
    /// addresses we own. Other reverse names are not ours.
    pub reverse_zones: bool,
    /// TTL of every record, and the SOA minimum, in seconds (default 5).
    pub ttl: u32,
    /// Pod records.
    pub pod_mode: PodMode,
    /// Name endpoints without a hostname after their pod, not their IP.
    pub endpoint_pod_names: bool,
    /// A ClusterIP Service without a ready endpoint does not exist
    /// (NXDOMAIN), as CoreDNS's `ignore_empty_service`; its cluster IPs'
    /// PTR records stay.
    pub ignore_empty_service: bool,
    /// Answer `<zone>.pin._zone.<svc>.<ns>.svc.<cluster-zone>` (the
    /// headless service's endpoints in that topology zone) and
    /// `<zone>.prefer._zone.…` (those, or all when the zone has none), as
    /// CoreDNS's `zonal`.
    pub zonal: bool,
    /// Keep autopath's clients (pod address to namespace) and ship them to
    /// the cores, which complete a pod's search path on the server.
    pub autopath: bool,
    /// The Service whose cluster IPs answer for `ns.dns.<zone>` and are the
    /// glue of the apex NS record (default `kube-system/kube-dns`), when no
    /// Service fronts [`Settings::own_ips`].
    pub dns_service: Option<ObjectKey>,
    /// This server's own pod addresses. As CoreDNS, `ns.dns.<zone>` is
    /// answered with the cluster IPs of the Services whose endpoints are
    /// these addresses; without such a Service, with `dns_service`'s; without
    /// that, with these addresses themselves.
    pub own_ips: Vec<IpAddr>,
    /// Zones whose names that no object answers are not ours (to be
    /// forwarded) rather than NXDOMAIN, as CoreDNS's `fallthrough`. The
    /// root means every zone.
    pub fallthrough: Vec<NameBuf>,
    /// Reverse zones (under `in-addr.arpa` or `ip6.arpa`) served with
    /// authority: an address no object owns is NXDOMAIN with the zone's
    /// SOA, not passed on (CoreDNS's `kubernetes cluster.local 0.10.in-addr.arpa`).
    pub reverse_authoritative: Vec<NameBuf>,
    /// Services' external addresses in zones of their own, as CoreDNS's
    /// `k8s_external`; `None` when off.
    pub external: Option<ExternalZones>,
    /// Zones among [`Settings::zones`] answered from ServiceImports (the
    /// Multi-Cluster Services API, `clusterset.local`) rather than from
    /// Services, as CoreDNS's `multicluster`.
    pub multicluster: Vec<NameBuf>,
}

impl Settings {
    /// The zones Services are named in: every zone but the multicluster ones.
    pub fn service_zones(&self) -> impl Iterator<Item = &NameBuf> {
        self.zones.iter().filter(|z| !self.is_multicluster(z))
    }

    /// The zones ServiceImports are named in.
    pub fn import_zones(&self) -> impl Iterator<Item = &NameBuf> {
        self.zones.iter().filter(|z| self.is_multicluster(z))
    }

    /// Whether `zone` is one of [`Settings::multicluster`], in any case.
    fn is_multicluster(&self, zone: &NameBuf) -> bool {
        let zone = zone.to_lowercase();
        self.multicluster.iter().any(|m| m.to_lowercase() == zone)
    }
}

/// `k8s_external`: `<svc>.<ns>.<zone>` answers a Service's `externalIPs`
/// and load balancer ingress points (never its cluster IPs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalZones {
    /// The zones served, lowercase. Reverse zones among them make the
    /// external IPs' PTR records point at `<svc>.<ns>.<first forward zone>`.
    pub zones: Vec<NameBuf>,
    /// The label under each zone for the zone's own name server:
    /// `ns1.<apex>.<zone>` (default `dns`).
    pub apex: Box<[u8]>,
    /// TTL of every external record and of the SOA (default 5).
    pub ttl: u32,
    /// Headless Services without external addresses answer with their
    /// endpoints: `<svc>.<ns>.<zone>` and `<endpoint>.<svc>.<ns>.<zone>`.
    pub headless: bool,
    /// External zones in which a name no Service answers goes on to
    /// forwarding instead of NXDOMAIN; the root means all of them.
    pub fallthrough: Vec<NameBuf>,
}

impl Default for ExternalZones {
    fn default() -> ExternalZones {
        ExternalZones {
            zones: Vec::new(),
            apex: (*b"dns").into(),
            ttl: 5,
            headless: false,
            fallthrough: Vec::new(),
        }
    }
}

impl ExternalZones {
    /// The reverse zones listed, which serve the external IPs' PTR records.
    pub fn reverse_zones(&self) -> impl Iterator<Item = &NameBuf> {
        self.zones.iter().filter(|z| is_reverse(z))
    }

    /// The forward zones, where Services are named.
    pub fn forward_zones(&self) -> impl Iterator<Item = &NameBuf> {
        self.zones.iter().filter(|z| !is_reverse(z))
    }
}

/// Whether `zone` lies under `in-addr.arpa` or `ip6.arpa`.
pub fn is_reverse(zone: &NameBuf) -> bool {
    ["in-addr.arpa", "ip6.arpa"]
        .iter()
        .filter_map(|text| NameBuf::from_text(text).ok())
        .any(|reverse| zone.ends_with(&reverse))
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            zones: vec![NameBuf::from_text("cluster.local").unwrap_or(NameBuf::ROOT)],
            reverse_zones: true,
            ttl: 5,
            pod_mode: PodMode::Insecure,
            endpoint_pod_names: false,
            ignore_empty_service: false,
            zonal: false,
            autopath: false,
            dns_service: Some(ObjectKey::new("kube-system", "kube-dns")),
            own_ips: Vec::new(),
            fallthrough: Vec::new(),
            reverse_authoritative: Vec::new(),
            external: None,
            multicluster: Vec::new(),
        }
    }
}
