//! What a unit contributes: the records of each of its names, computed
//! fresh on every pass and compared with what it gave before.

use super::links::{SliceLists, SliceNames};
use super::*;

/// One SRV record before weights are known.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct SrvRecord {
    pub(super) port: u16,
    pub(super) target: Box<[u8]>,
    /// The target's addresses, for the additional section.
    pub(super) addrs: Vec<IpAddr>,
}

/// What a unit says about one name. An empty set still makes the name exist.
/// Most names carry only addresses; the rest is boxed to keep this small.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct Records {
    pub(super) addrs: Vec<IpAddr>,
    pub(super) extra: Option<Box<Extra>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct Extra {
    pub(super) srv: Vec<SrvRecord>,
    pub(super) ptr: Vec<Box<[u8]>>,
    pub(super) cname: Option<Box<[u8]>>,
    pub(super) txt: Option<Box<[u8]>>,
}

impl Records {
    pub(super) fn add_ip(&mut self, ip: IpAddr) {
        self.addrs.push(ip);
    }

    pub(super) fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Sorts and de-duplicates, so that equal sets encode to equal bytes.
    pub(super) fn normalize(&mut self) {
        self.addrs.sort_unstable();
        self.addrs.dedup();
        if let Some(extra) = &mut self.extra {
            extra.ptr.sort_unstable();
            extra.ptr.dedup();
            // The same endpoint in two slices gives the same SRV record twice.
            extra
                .srv
                .sort_unstable_by(|x, y| (x.port, &x.target).cmp(&(y.port, &y.target)));
            extra.srv.dedup_by(|later, kept| {
                if later.port == kept.port && later.target == kept.target {
                    kept.addrs.extend_from_slice(&later.addrs);
                    true
                } else {
                    false
                }
            });
            for srv in &mut extra.srv {
                srv.addrs.sort_unstable();
                srv.addrs.dedup();
            }
        }
    }
}

/// A unit's output while it is computed.
#[derive(Default)]
pub(super) struct UnitOutput {
    /// Records per lowercase wire name.
    pub(super) names: hashbrown::HashMap<Vec<u8>, Records>,
    /// (address, PTR target) pairs.
    pub(super) ptrs: Vec<(IpAddr, Box<[u8]>)>,
}

impl UnitOutput {
    pub(super) fn at(&mut self, name: &NameBuf) -> &mut Records {
        self.names.entry_ref(name.as_wire()).or_default()
    }

    pub(super) fn ptr(&mut self, ip: IpAddr, target: &NameBuf) {
        self.ptrs.push((ip, target.as_wire().into()));
    }

    /// Names as their table keys in `zones` (a name in no zone has no
    /// entry, so it is left out), sorted by key; record sets normalized;
    /// PTR pairs sorted and unique.
    pub(super) fn finish(self, zones: &Zones) -> Computed {
        let mut names: Vec<(Vec<u8>, Records)> = self
            .names
            .into_iter()
            .filter_map(|(mut name, mut records)| {
                let key = zones.table_key_of_wire(&name)?;
                // The key is the name cut short and a byte: no allocation.
                name.clear();
                name.extend_from_slice(key.as_bytes());
                records.normalize();
                Some((name, records))
            })
            .collect();
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut ptrs = self.ptrs;
        ptrs.sort_unstable();
        ptrs.dedup();
        Computed { names, ptrs }
    }
}

/// A unit's finished output.
pub(super) struct Computed {
    /// Record sets by [`crate::TableKey`] (its bytes), sorted by key.
    pub(super) names: Vec<(Vec<u8>, Records)>,
    /// Sorted by address, then target.
    pub(super) ptrs: Vec<(IpAddr, Box<[u8]>)>,
}

/// Adds an SRV record to the bare service name and, for a named port, to
/// `_port._proto.<service>`, whose name it returns.
pub(super) fn add_srv(
    out: &mut UnitOutput,
    base: &NameBuf,
    port: &str,
    protocol: &str,
    srv: SrvRecord,
) -> Option<NameBuf> {
    let port_name = srv_name(out, base, port, protocol);
    if let Some(port_name) = &port_name {
        out.at(port_name).extra().srv.push(srv.clone());
    }
    out.at(base).extra().srv.push(srv);
    port_name
}

/// The `_port._proto.<service>` name of a named port (making
/// `_proto.<service>` exist between), or `None` for an unnamed port.
pub(super) fn srv_name(
    out: &mut UnitOutput,
    base: &NameBuf,
    port: &str,
    protocol: &str,
) -> Option<NameBuf> {
    if port.is_empty() {
        return None;
    }
    let proto_label = format!("_{protocol}");
    let port_label = format!("_{}", port.to_ascii_lowercase());
    let proto_name = base.prepend_label(proto_label.as_bytes()).ok()?;
    let port_name = proto_name.prepend_label(port_label.as_bytes()).ok()?;
    out.at(&proto_name);
    Some(port_name)
}

/// A slice's ports with their `_port._proto.<base>` names (`None` for an
/// unnamed port), making those names exist.
pub(super) fn port_names(
    out: &mut UnitOutput,
    base: &NameBuf,
    slice: &SliceModel,
) -> Vec<(u16, Option<NameBuf>)> {
    slice
        .ports
        .iter()
        .map(|p| (p.port, srv_name(out, base, &p.name, &p.protocol)))
        .collect()
}

/// The two `zonal` directives, as name labels.
pub(super) const ZONAL_DIRECTIVES: [&[u8]; 2] = [b"pin", b"prefer"];
/// The label that stands for every topology zone no endpoint is in: the
/// table answers `<zone>.<directive>._zone.<svc>…` from
/// `*.<directive>._zone.<svc>…` when no endpoint is in `<zone>`.
pub(super) const ANY_TOPOLOGY_ZONE: &[u8] = b"*";

/// `<zone>.<directive>._zone.<service>`, with the zone's labels (a zone
/// may hold dots), or `*` for `None`.
pub(super) fn zonal_name(base: &NameBuf, directive: &[u8], zone: Option<&str>) -> Option<NameBuf> {
    let mut name = base
        .prepend_label(b"_zone")
        .ok()?
        .prepend_label(directive)
        .ok()?;
    match zone {
        Some(zone) => {
            for label in zone.split('.').rev() {
                name = name.prepend_label(label.as_bytes()).ok()?;
            }
        }
        None => name = name.prepend_label(ANY_TOPOLOGY_ZONE).ok()?,
    }
    Some(name)
}

/// `<ns>.svc.<zone>` and `<ns>.pod.<zone>` exist once a namespace does.
pub(super) fn namespace_names(namespace: &str, zone: &NameBuf, out: &mut UnitOutput) {
    for label in [&b"svc"[..], b"pod"] {
        if let Ok(name) = zone
            .prepend_label(label)
            .and_then(|n| n.prepend_label(namespace.as_bytes()))
        {
            out.at(&name.to_lowercase());
        }
    }
}

pub(super) fn service_name_in(key: &ObjectKey, zone: &NameBuf) -> Option<NameBuf> {
    let name = zone
        .prepend_label(b"svc")
        .and_then(|n| n.prepend_label(key.namespace.as_bytes()))
        .and_then(|n| n.prepend_label(key.name.as_bytes()))
        .ok()?;
    Some(name.to_lowercase())
}

/// `<svc>.<ns>.<zone>`, lowercase: a Service's name in an external zone.
pub(super) fn external_name_in(key: &ObjectKey, zone: &NameBuf) -> Option<NameBuf> {
    let name = zone
        .prepend_label(key.namespace.as_bytes())
        .and_then(|n| n.prepend_label(key.name.as_bytes()))
        .ok()?;
    Some(name.to_lowercase())
}

/// A Service's external addresses under `base`: A/AAAA (or, for a load
/// balancer known only by hostname, a CNAME to it), and SRV records per
/// port that target `base` with the addresses as glue (or the hostname).
fn external_address_records(
    service: &ServiceModel,
    addresses: &ExternalAddresses,
    base: &NameBuf,
    out: &mut UnitOutput,
) {
    let target: Box<[u8]> = match (addresses.ips.is_empty(), addresses.hostnames.first()) {
        (true, Some(hostname)) => match NameBuf::from_text(hostname) {
            Ok(hostname) => {
                let hostname: Box<[u8]> = hostname.to_lowercase().as_wire().into();
                out.at(base).extra().cname = Some(hostname.clone());
                hostname
            }
            Err(error) => {
                tracing::debug!(service = %service.key, %error, "load balancer hostname is not a valid DNS name; skipped");
                return;
            }
        },
        _ => {
            let records = out.at(base);
            for ip in &addresses.ips {
                records.add_ip(*ip);
            }
            base.as_wire().into()
        }
    };
    for port in service.ports.iter() {
        let srv = SrvRecord {
            port: port.port,
            target: target.clone(),
            // Glue for `base`; none for a hostname, which is not ours.
            addrs: addresses.ips.clone(),
        };
        // As CoreDNS's `k8s_external`, `_port._proto.<svc>…` answers A and
        // AAAA with the Service's external addresses too.
        if let Some(port_name) = add_srv(out, base, &port.name, &port.protocol, srv) {
            let records = out.at(&port_name);
            for ip in &addresses.ips {
                records.add_ip(*ip);
            }
        }
    }
}

pub(super) fn name_from_key(key: &[u8]) -> NameBuf {
    NameBuf::from_wire(key)
        .map(|(name, _)| name)
        .unwrap_or(NameBuf::ROOT)
}

impl Compiler {
    // ---- what each unit contributes -------------------------------------

    pub(super) fn unit_output(&self, unit: &Unit) -> Computed {
        let mut out = UnitOutput::default();
        match unit {
            Unit::Zone => self.zone_records(&mut out),
            Unit::Service(key) => {
                if let Some(service) = self.services.get(key) {
                    let slices = self.slices_of(&self.slices_by_service, key);
                    // Sized up front: a big service must not rehash as it grows.
                    let endpoints: usize = slices.iter().map(|s| s.endpoints.len()).sum();
                    let zones = self.settings.service_zones().count();
                    out.names.reserve((endpoints + 8) * zones);
                    out.ptrs.reserve((endpoints + 2) * zones);
                    // CoreDNS counts ready addresses alone here.
                    let empty = self.settings.ignore_empty_service
                        && !slices
                            .iter()
                            .flat_map(|s| s.endpoints.iter())
                            .any(|e| e.ready && !e.addresses.is_empty());
                    self.service_records(service, empty, &mut out);
                    self.external_records(service, &slices, &mut out);
                    // A hidden service has no endpoint names either (a
                    // not-ready one published would make it a non-terminal).
                    for slice in slices.into_iter().filter(|_| !empty) {
                        self.slice_records(service, slice, &mut out);
                    }
                }
            }
            Unit::Import(key) => {
                if let Some(import) = self.imports.get(key) {
                    let slices = self.slices_of(&self.slices_by_import, key);
                    self.import_records(import, &slices, &mut out);
                }
            }
            Unit::Namespace(name) => {
                if self.namespaces.contains(name) || self.services_per_namespace.contains_key(name)
                {
                    for zone in &self.settings.zones {
                        namespace_names(name, zone, &mut out);
                    }
                    // `<ns>.<external-zone>` is NODATA while the namespace is.
                    let external = self.settings.external.iter();
                    for zone in external.flat_map(ExternalZones::forward_zones) {
                        if let Ok(name) = zone.prepend_label(name.as_bytes()) {
                            out.at(&name.to_lowercase());
                        }
                    }
                }
            }
        }
        out.finish(&self.zones)
    }

    /// The slices listed for a service or import.
    pub(super) fn slices_of(&self, lists: &SliceLists, key: &ObjectKey) -> Vec<&SliceModel> {
        lists
            .get(key)
            .into_iter()
            .flat_map(SliceNames::iter)
            .filter_map(|name| {
                self.slices
                    .get(&ObjectKey::new(key.namespace.clone(), name.clone()))
                    .map(|slice| &**slice)
            })
            .collect()
    }

    /// A ServiceImport's names in each multicluster zone, as CoreDNS's
    /// `multicluster` gives them:
    /// - ClusterSetIP: `<svc>.<ns>.svc.<zone>` answers `spec.ips` (nothing
    ///   without ports; NODATA without addresses), with SRV per port;
    /// - headless: the ready endpoints of its slices in every cluster, with
    ///   SRV targets `<endpoint>.<cluster>.<svc>…` (nothing without ready
    ///   endpoints);
    /// - both: `<endpoint>.<cluster>.<svc>.<ns>.svc.<zone>` per ready
    ///   endpoint of a slice that names its source cluster.
    pub(super) fn import_records(
        &self,
        import: &ImportModel,
        slices: &[&SliceModel],
        out: &mut UnitOutput,
    ) {
        let has_ready = slices
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .any(|e| e.ready && !e.addresses.is_empty());
        for zone in self.settings.import_zones() {
            let Some(base) = service_name_in(&import.key, zone) else {
                continue;
            };
            match &import.kind {
                ImportKind::ClusterSetIp(_) if import.ports.is_empty() => continue,
                ImportKind::ClusterSetIp(_) if self.settings.ignore_empty_service && !has_ready => {
                    continue;
                }
                ImportKind::ClusterSetIp(ips) => {
                    let records = out.at(&base);
                    for ip in ips {
                        records.add_ip(*ip);
                    }
                    // No addresses: NODATA for SRV too.
                    let ports = if ips.is_empty() {
                        &[][..]
                    } else {
                        &import.ports
                    };
                    for port in ports {
                        let srv = SrvRecord {
                            port: port.port,
                            target: base.as_wire().into(),
                            addrs: ips.clone(),
                        };
                        add_srv(out, &base, &port.name, &port.protocol, srv);
                    }
                }
                ImportKind::Headless if !has_ready => continue,
                ImportKind::Headless => {}
            }
            let headless = import.kind == ImportKind::Headless;
            for slice in slices {
                self.imported_endpoint_records(slice, &base, headless, out);
            }
        }
    }

    /// One imported slice's ready endpoints under `base`: their names
    /// (`<endpoint>.<cluster>.<base>`, when the slice names its cluster)
    /// and, for a headless import, the import's A/AAAA and SRV sets.
    fn imported_endpoint_records(
        &self,
        slice: &SliceModel,
        base: &NameBuf,
        headless: bool,
        out: &mut UnitOutput,
    ) {
        let Some(link) = &slice.import else {
            return;
        };
        // A slice without its cluster's label has no endpoint names: they
        // would have an empty label.
        let cluster = Some(&link.cluster)
            .filter(|c| !c.is_empty())
            .and_then(|c| base.prepend_label(c.to_ascii_lowercase().as_bytes()).ok());
        if let Some(cluster) = &cluster {
            out.at(cluster);
        }
        let port_names = if headless {
            port_names(out, base, slice)
        } else {
            Vec::new()
        };
        for endpoint in slice.endpoints.iter().filter(|e| e.ready) {
            for &ip in &endpoint.addresses {
                let label = self.endpoint_label(endpoint, ip);
                let endpoint_name = cluster
                    .as_ref()
                    .and_then(|c| c.prepend_label(label.as_bytes()).ok());
                if let Some(name) = &endpoint_name {
                    out.at(name).add_ip(ip);
                }
                if !headless {
                    continue;
                }
                out.at(base).add_ip(ip);
                let Some(name) = &endpoint_name else {
                    continue;
                };
                for (port, port_name) in &port_names {
                    let srv = SrvRecord {
                        port: *port,
                        target: name.as_wire().into(),
                        addrs: vec![ip],
                    };
                    out.at(base).extra().srv.push(srv.clone());
                    if let Some(port_name) = port_name {
                        out.at(port_name).extra().srv.push(srv);
                    }
                }
            }
        }
    }

    pub(super) fn zone_records(&self, out: &mut UnitOutput) {
        for zone in &self.settings.zones {
            for label in [&b"svc"[..], b"pod"] {
                if let Ok(name) = zone.prepend_label(label) {
                    out.at(&name);
                }
            }
            if let Ok(name) = zone.prepend_label(b"dns-version") {
                out.at(&name).extra().txt = Some(DNS_SCHEMA_VERSION.as_bytes().into());
            }
            let ns_ips = self.name_server_ips();
            if !ns_ips.is_empty()
                && let Ok(dns) = zone.prepend_label(b"dns")
                && let Ok(ns) = dns.prepend_label(b"ns")
            {
                out.at(&dns);
                let records = out.at(&ns);
                for ip in ns_ips {
                    records.add_ip(ip);
                }
            }
        }
        // `k8s_external`: `<apex>.<zone>` is NODATA, `ns1.<apex>.<zone>`
        // answers the name server's external addresses (NODATA if none).
        if let Some(external) = &self.settings.external {
            let ns_ips = self.external_name_server_ips(external);
            for zone in external.forward_zones() {
                if let Ok(apex) = zone.prepend_label(&external.apex)
                    && let Ok(ns) = apex.prepend_label(b"ns1")
                {
                    out.at(&apex.to_lowercase());
                    let records = out.at(&ns.to_lowercase());
                    for ip in &ns_ips {
                        records.add_ip(*ip);
                    }
                }
            }
        }
    }

    /// `k8s_external`'s names of a Service in each external zone:
    /// - with external addresses, `<svc>.<ns>.<zone>` answers them (a
    ///   load balancer known only by hostname: a CNAME to the first), and
    ///   SRV there and at `_port._proto.<svc>…` targets that name (or the
    ///   hostname);
    /// - without, and with `headless`, a headless Service answers as in the
    ///   cluster zone: its endpoints, with `<endpoint>.<svc>.<ns>.<zone>`
    ///   names that answer A/AAAA and an SRV record for themselves;
    /// - the external IPs' PTR records, if a reverse zone is listed, point
    ///   at the Service's name in the first forward zone.
    pub(super) fn external_records(
        &self,
        service: &ServiceModel,
        slices: &[&SliceModel],
        out: &mut UnitOutput,
    ) {
        let Some(external) = &self.settings.external else {
            return;
        };
        let addresses = service.external.as_deref();
        let headless = external.headless && service.kind == ServiceKind::Headless;
        if addresses.is_none() && !headless {
            return;
        }
        // `<svc>.<ns>.<zone>` of a namespace named like the apex lies under
        // `<apex>.<zone>`, where only the name server lives and every other
        // name is NXDOMAIN, as in CoreDNS: such a Service has no forward
        // names, which would otherwise collide with `ns1.<apex>.<zone>`.
        // Its PTR records stay, as CoreDNS's reverse lookup keeps them.
        let under_apex = service
            .key
            .namespace
            .as_bytes()
            .eq_ignore_ascii_case(&external.apex);
        for zone in external.forward_zones().filter(|_| !under_apex) {
            let Some(base) = external_name_in(&service.key, zone) else {
                continue;
            };
            match addresses {
                Some(addresses) => external_address_records(service, addresses, &base, out),
                None => {
                    for slice in slices {
                        self.external_endpoint_records(service, slice, &base, out);
                    }
                }
            }
        }
        if let Some(addresses) = addresses
            && external.reverse_zones().next().is_some()
            && let Some(zone) = external.forward_zones().next()
            && let Some(base) = external_name_in(&service.key, zone)
        {
            for ip in &addresses.ips {
                out.ptr(*ip, &base);
            }
        }
    }

    /// A headless Service's endpoints under its external name.
    fn external_endpoint_records(
        &self,
        service: &ServiceModel,
        slice: &SliceModel,
        base: &NameBuf,
        out: &mut UnitOutput,
    ) {
        let port_names = port_names(out, base, slice);
        for endpoint in &slice.endpoints {
            if !endpoint.ready && !service.publish_not_ready_addresses {
                continue;
            }
            for &ip in &endpoint.addresses {
                let label = self.endpoint_label(endpoint, ip);
                let Ok(endpoint_name) = base.prepend_label(label.as_bytes()) else {
                    continue;
                };
                out.at(base).add_ip(ip);
                out.at(&endpoint_name).add_ip(ip);
                for (port, port_name) in &port_names {
                    let srv = SrvRecord {
                        port: *port,
                        target: endpoint_name.as_wire().into(),
                        addrs: vec![ip],
                    };
                    out.at(&endpoint_name).extra().srv.push(srv.clone());
                    out.at(base).extra().srv.push(srv.clone());
                    if let Some(port_name) = port_name {
                        out.at(port_name).extra().srv.push(srv);
                    }
                }
            }
        }
    }

    /// The label of an endpoint's name: its hostname, else (with
    /// `endpoint_pod_names`) its pod's name, else its dashed address.
    fn endpoint_label(&self, endpoint: &EndpointModel, ip: IpAddr) -> String {
        match (endpoint.hostname(), endpoint.pod_name()) {
            (Some(hostname), _) => hostname.to_ascii_lowercase(),
            (None, Some(pod)) if self.settings.endpoint_pod_names => pod.to_ascii_lowercase(),
            _ => dashed_label(ip),
        }
    }

    /// The addresses of `ns1.<apex>.<external-zone>` and the glue of the
    /// external zones' NS record, as CoreDNS finds them: the external
    /// addresses of the Services that front our own pods (our own
    /// addresses, for a headless one with `headless`); if no Service fronts
    /// them, our own addresses.
    pub(super) fn external_name_server_ips(&self, external: &ExternalZones) -> Vec<IpAddr> {
        if self.fronting.is_empty() {
            return self.settings.own_ips.clone();
        }
        let mut ips: Vec<IpAddr> = Vec::new();
        for service in self.fronting.values().filter_map(|s| self.services.get(s)) {
            match service.external.as_deref() {
                Some(addresses) => ips.extend(&addresses.ips),
                None if external.headless && service.kind == ServiceKind::Headless => {
                    ips.extend(&self.settings.own_ips);
                }
                None => {}
            }
        }
        ips.sort();
        ips.dedup();
        ips
    }

    /// The service's own names; with `empty` (a ClusterIP Service that
    /// `ignore_empty_service` hides), only its cluster IPs' PTR records.
    pub(super) fn service_records(
        &self,
        service: &ServiceModel,
        empty: bool,
        out: &mut UnitOutput,
    ) {
        let key = &service.key;
        for zone in self.settings.service_zones() {
            let Some(base) = service_name_in(key, zone) else {
                tracing::debug!(service = %key, "service name is not a valid DNS name; skipped");
                continue;
            };
            match &service.kind {
                ServiceKind::ExternalName(target) => match NameBuf::from_text(target) {
                    Ok(target) => {
                        out.at(&base).extra().cname = Some(target.to_lowercase().as_wire().into());
                    }
                    Err(error) => {
                        tracing::debug!(service = %key, %error, "externalName is not a valid DNS name; skipped");
                    }
                },
                ServiceKind::ClusterIp(ips) if empty => {
                    if self.settings.reverse_zones {
                        for ip in ips {
                            out.ptr(*ip, &base);
                        }
                    }
                }
                ServiceKind::ClusterIp(ips) => {
                    let base_records = out.at(&base);
                    for ip in ips {
                        base_records.add_ip(*ip);
                    }
                    for port in service.ports.iter() {
                        let srv = SrvRecord {
                            port: port.port,
                            target: base.as_wire().into(),
                            addrs: ips.clone(),
                        };
                        add_srv(out, &base, &port.name, &port.protocol, srv);
                    }
                    if self.settings.reverse_zones {
                        for ip in ips {
                            out.ptr(*ip, &base);
                        }
                    }
                }
                // Zonal names exist for every zone (NODATA when empty);
                // the endpoints fill them in.
                ServiceKind::Headless if self.settings.zonal => {
                    for directive in ZONAL_DIRECTIVES {
                        if let Some(name) = zonal_name(&base, directive, None) {
                            out.at(&name);
                        }
                    }
                }
                ServiceKind::Headless => {}
            }
        }
    }

    /// A slice's part of its service: endpoint names and PTRs for any
    /// service, and for a headless one also the service's A/AAAA and SRV sets.
    pub(super) fn slice_records(
        &self,
        service: &ServiceModel,
        slice: &SliceModel,
        out: &mut UnitOutput,
    ) {
        let headless = match service.kind {
            ServiceKind::Headless => true,
            ServiceKind::ClusterIp(_) => false,
            ServiceKind::ExternalName(_) => return,
        };
        for zone in self.settings.service_zones() {
            if let Some(base) = service_name_in(&service.key, zone) {
                self.endpoint_records(service, slice, &base, headless, out);
            }
        }
    }

    pub(super) fn endpoint_records(
        &self,
        service: &ServiceModel,
        slice: &SliceModel,
        base: &NameBuf,
        headless: bool,
        out: &mut UnitOutput,
    ) {
        // `_port._proto.<svc>` names for this slice's ports, once per slice.
        let port_names = if headless {
            port_names(out, base, slice)
        } else {
            Vec::new()
        };
        // `zonal`: names per topology zone, and `prefer`'s fallback to all.
        let zonal = headless && self.settings.zonal;
        let prefer_any = zonal
            .then(|| zonal_name(base, ZONAL_DIRECTIVES[1], None))
            .flatten();
        let mut zone_names: Vec<(u8, [Option<NameBuf>; 2])> = Vec::new();
        for endpoint in &slice.endpoints {
            if !endpoint.ready && !service.publish_not_ready_addresses {
                continue;
            }
            let in_zone = match endpoint.zone.filter(|_| zonal) {
                Some(zone) => match zone_names.iter().position(|(z, _)| *z == zone) {
                    Some(i) => Some(i),
                    None => {
                        let name = slice.zone_of(endpoint);
                        let names = ZONAL_DIRECTIVES
                            .map(|d| name.and_then(|n| zonal_name(base, d, Some(n))));
                        zone_names.push((zone, names));
                        Some(zone_names.len() - 1)
                    }
                },
                None => None,
            };
            for &ip in &endpoint.addresses {
                let label = self.endpoint_label(endpoint, ip);
                let Ok(endpoint_name) = base.prepend_label(label.as_bytes()) else {
                    tracing::debug!(service = %service.key, %label, "endpoint name is not a valid DNS label; skipped");
                    continue;
                };
                out.at(&endpoint_name).add_ip(ip);
                if self.settings.reverse_zones {
                    out.ptr(ip, &endpoint_name);
                }
                if headless {
                    // The service name, then any zonal names, each with
                    // the address and an SRV record per port.
                    let zonal_names = in_zone
                        .map(|i| zone_names[i].1.iter().flatten().cloned().collect())
                        .unwrap_or_else(Vec::new);
                    let target: Box<[u8]> = endpoint_name.as_wire().into();
                    for name in std::iter::once(base)
                        .chain(prefer_any.as_ref())
                        .chain(&zonal_names)
                    {
                        out.at(name).add_ip(ip);
                        for (port, _) in &port_names {
                            out.at(name).extra().srv.push(SrvRecord {
                                port: *port,
                                target: target.clone(),
                                addrs: vec![ip],
                            });
                        }
                    }
                    for (port, port_name) in &port_names {
                        if let Some(port_name) = port_name {
                            out.at(port_name).extra().srv.push(SrvRecord {
                                port: *port,
                                target: target.clone(),
                                addrs: vec![ip],
                            });
                        }
                    }
                }
            }
        }
    }
}
