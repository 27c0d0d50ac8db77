//! Encoding: SRV answers cut to fit a message, and the answers that belong
//! to a zone as a whole.

use super::*;

pub(super) fn address_rdata(ip: IpAddr) -> Rdata<'static> {
    match ip {
        IpAddr::V4(v4) => Rdata::A(v4),
        IpAddr::V6(v6) => Rdata::Aaaa(v6),
    }
}

/// The SRV answer, cut down to fit a 64 KiB message if need be: first
/// without the additional section, then with fewer targets. SRV targets are
/// never compressed, so record sizes are known before encoding and the
/// answer is encoded once. Every other type of the name is served in full.
pub(super) fn srv_answer_that_fits(
    b: &mut AnswerBuilder,
    name: &NameBuf,
    ttl: u32,
    records: &[SrvRecord],
) -> Result<PreparedAnswer, BuildError> {
    // Room for the tail: 64 KiB less header, question and an OPT record.
    let budget = kubewire_wire::max_records_len(name.wire_len() + 4);
    // Owner pointer (2) + fixed fields (10) + priority, weight, port (6) + target.
    let srv_len = |r: &SrvRecord| 18 + r.target.len();
    // Additional owners point at the literal targets: 2 + 10 + address.
    let glue_len = |r: &SrvRecord| {
        r.addrs
            .iter()
            .map(|ip| if ip.is_ipv4() { 16 } else { 28 })
            .sum::<usize>()
    };
    let full: usize = records.iter().map(|r| srv_len(r) + glue_len(r)).sum();
    if full <= budget {
        return srv_answer(b, name, ttl, records, true);
    }
    let mut used = 0usize;
    let count = records.iter().take_while(|r| {
        used += srv_len(r);
        used <= budget
    });
    let count = count.count().max(1);
    tracing::debug!(
        name = %name,
        targets = records.len(),
        kept = count,
        "SRV set too large for one DNS message; additional section dropped"
    );
    srv_answer(b, name, ttl, &records[..count], false)
}

/// The SRV answer: priority 0, weight `floor(100/N)`, and (with
/// `additional`) the targets' addresses in the additional section.
pub(super) fn srv_answer(
    b: &mut AnswerBuilder,
    name: &NameBuf,
    ttl: u32,
    records: &[SrvRecord],
    additional: bool,
) -> Result<PreparedAnswer, BuildError> {
    let weight = (100 / records.len()) as u16;
    let targets: Vec<NameBuf> = records.iter().map(|r| name_from_key(&r.target)).collect();
    b.reset(name);
    for (record, target) in records.iter().zip(&targets) {
        b.push(
            Owner::Question,
            ttl,
            Rdata::Srv {
                priority: 0,
                weight,
                port: record.port,
                target,
            },
        )?;
    }
    if !additional {
        return b.take();
    }
    b.section(Section::Additional)?;
    let mut seen: BTreeSet<(&[u8], IpAddr)> = BTreeSet::new();
    for (record, target) in records.iter().zip(&targets) {
        for &ip in &record.addrs {
            if seen.insert((&record.target, ip)) {
                b.push(Owner::Name(target), ttl, address_rdata(ip))?;
            }
        }
    }
    b.take()
}

/// What a zone is, for its own answers.
#[derive(Clone, Copy, Debug)]
pub(super) enum ZoneRole<'a> {
    /// A cluster zone: pod templates, NS glue from the cluster's DNS Service.
    Cluster,
    /// A reverse zone: PTR records alone.
    Reverse,
    /// A `k8s_external` zone, with glue from the DNS Service's external
    /// addresses.
    External(&'a ExternalZones),
}

/// A name server of a zone: its NS target (`None` for the zone's own
/// `ns.dns.<zone>`, the SOA's MNAME) and its addresses, the glue.
pub(super) type NameServer = (Option<NameBuf>, Vec<IpAddr>);

/// SOA, NS, NODATA, NXDOMAIN, SERVFAIL and pod templates for one zone.
pub(super) fn zone_answers(
    apex: &NameBuf,
    role: ZoneRole<'_>,
    serial: u32,
    settings: &Settings,
    name_servers: &[NameServer],
) -> Result<ZoneAnswers, BuildError> {
    let cluster = matches!(role, ZoneRole::Cluster);
    let (ttl, soa_ttl, ns_owner) = match role {
        // As CoreDNS: the SOA's own TTL is capped at 300 s; its minimum is the TTL.
        ZoneRole::Cluster | ZoneRole::Reverse => (settings.ttl, settings.ttl.min(300), &b"dns"[..]),
        // As `k8s_external`: `ns1.<apex>.<zone>`, one TTL for all.
        ZoneRole::External(external) => (external.ttl, external.ttl, &*external.apex),
    };
    let ns_label: &[u8] = match role {
        ZoneRole::External(_) => b"ns1",
        _ => b"ns",
    };
    let mname = apex
        .prepend_label(ns_owner)
        .and_then(|n| n.prepend_label(ns_label))
        .unwrap_or(*apex);
    let rname = match role {
        ZoneRole::External(external) => apex.prepend_label(&external.apex),
        _ => Ok(*apex),
    }
    .and_then(|n| n.prepend_label(b"hostmaster"))
    .unwrap_or(*apex);
    let soa = Rdata::Soa {
        mname: &mname,
        rname: &rname,
        serial,
        refresh: 7200,
        retry: 1800,
        expire: 86400,
        minimum: ttl,
    };

    let mut b = AnswerBuilder::new(apex);
    b.push(Owner::Question, soa_ttl, soa)?;
    let soa_answer = b.finish()?;

    let mut b = AnswerBuilder::new(apex);
    let targets: Vec<(NameBuf, &[IpAddr])> = match name_servers {
        [] => vec![(mname, &[][..])],
        servers => servers
            .iter()
            .map(|(target, ips)| (target.unwrap_or(mname), ips.as_slice()))
            .collect(),
    };
    for (target, _) in &targets {
        b.push(Owner::Question, ttl, Rdata::Ns(target))?;
    }
    if !matches!(role, ZoneRole::Reverse) {
        b.section(Section::Additional)?;
        for (target, ips) in &targets {
            for ip in *ips {
                b.push(Owner::Name(target), ttl, address_rdata(*ip))?;
            }
        }
    }
    let ns_answer = b.finish()?;

    let negative = |rcode: Rcode| -> Result<PreparedAnswer, BuildError> {
        let mut b = AnswerBuilder::for_zone(apex);
        b.set_rcode(rcode);
        b.section(Section::Authority)?;
        b.push(Owner::Name(apex), soa_ttl, soa)?;
        b.finish()
    };

    let pod_templates = if cluster && settings.pod_mode != PodMode::Disabled {
        let mut a = AnswerBuilder::for_zone(apex);
        a.push(Owner::Question, ttl, Rdata::A(Ipv4Addr::UNSPECIFIED))?;
        let mut aaaa = AnswerBuilder::for_zone(apex);
        aaaa.push(Owner::Question, ttl, Rdata::Aaaa(Ipv6Addr::UNSPECIFIED))?;
        Some((a.finish()?, aaaa.finish()?))
    } else {
        None
    };
    let external = settings.external.as_ref();
    let listed_external = external.is_some_and(|e| e.zones.contains(apex));
    let falls_through = |zones: &[NameBuf]| zones.iter().any(|zone| apex.ends_with(zone));
    Ok(ZoneAnswers {
        apex: *apex,
        cluster,
        external: matches!(role, ZoneRole::External(_)),
        authoritative: !matches!(role, ZoneRole::Reverse)
            || settings.reverse_authoritative.contains(apex)
            || listed_external,
        apex_answers: vec![(rtype::SOA, soa_answer), (rtype::NS, ns_answer)],
        nodata: negative(Rcode::NOERROR)?,
        nxdomain: negative(Rcode::NXDOMAIN)?,
        // As CoreDNS before its first sync: SERVFAIL with the zone SOA.
        servfail: negative(Rcode::SERVFAIL)?,
        pod_templates,
        pods_verified: settings.pod_mode == PodMode::Verified,
        fallthrough: match role {
            ZoneRole::External(external) => falls_through(&external.fallthrough),
            _ => {
                falls_through(&settings.fallthrough)
                    || (listed_external && external.is_some_and(|e| falls_through(&e.fallthrough)))
            }
        },
        zonal: cluster && settings.zonal,
    })
}

impl Compiler {
    // ---- encoding ----------------------------------------------------------

    /// Encodes a name's answers, one per type. A type whose answer cannot be
    /// encoded is left out with a warning; the name's other types still
    /// answer. `key` is the name's [`TableKey`]; returns `None` if its zone
    /// is not one of the compiler's.
    pub(super) fn build_entry(
        &self,
        b: &mut AnswerBuilder,
        key: &TableKey,
        owner: u32,
        records: &Records,
    ) -> Option<NameEntry> {
        let name = self.zones.name_of(key.as_bytes())?;
        let answers = self.zones.zones.get(usize::from(key.zone()))?;
        let ttl = match &self.settings.external {
            Some(external) if answers.external => external.ttl,
            _ => self.settings.ttl,
        };
        let mut answers: Vec<(u16, PreparedAnswer)> = Vec::new();
        let mut add = |types: &[u16], built: Result<PreparedAnswer, BuildError>| match built {
            Ok(answer) => {
                if let Some((last, others)) = types.split_last() {
                    answers.extend(others.iter().map(|t| (*t, answer.clone())));
                    answers.push((*last, answer));
                }
            }
            Err(error) => {
                tracing::warn!(name = %name, qtype = types[0], %error, "answer left out: it cannot be encoded");
            }
        };
        let empty = Extra::default();
        let extra = records.extra.as_deref().unwrap_or(&empty);
        if let Some(cname) = &extra.cname {
            let target = name_from_key(cname);
            b.reset(&name);
            let built = b
                .push(Owner::Question, ttl, Rdata::Cname(&target))
                .and_then(|()| b.take());
            add(&[rtype::A, rtype::AAAA, rtype::CNAME], built);
            return Some(NameEntry::new(key, owner, answers));
        }
        // Addresses are sorted, IPv4 first.
        let v6_from = records.addrs.partition_point(IpAddr::is_ipv4);
        let (v4, v6) = records.addrs.split_at(v6_from);
        for (family, rr_type) in [(v4, rtype::A), (v6, rtype::AAAA)] {
            if family.is_empty() {
                continue;
            }
            b.reset(&name);
            let built = family
                .iter()
                .try_for_each(|ip| b.push(Owner::Question, ttl, address_rdata(*ip)))
                .and_then(|()| {
                    if family.len() > 1 {
                        b.rotate_answers();
                    }
                    b.take()
                });
            add(&[rr_type], built);
        }
        if !extra.srv.is_empty() {
            add(
                &[rtype::SRV],
                srv_answer_that_fits(b, &name, ttl, &extra.srv),
            );
        }
        if !extra.ptr.is_empty() {
            b.reset(&name);
            let built = extra
                .ptr
                .iter()
                .try_for_each(|target| {
                    b.push(Owner::Question, ttl, Rdata::Ptr(&name_from_key(target)))
                })
                .and_then(|()| b.take());
            add(&[rtype::PTR], built);
        }
        if let Some(txt) = &extra.txt {
            b.reset(&name);
            let built = b
                .push(Owner::Question, DNS_VERSION_TTL, Rdata::Txt(&[txt]))
                .and_then(|()| b.take());
            add(&[rtype::TXT], built);
        }
        Some(NameEntry::new(key, owner, answers))
    }

    pub(super) fn build_zones(&self, serial: u32) -> Zones {
        let external = self.settings.external.as_ref();
        let mut apexes: Vec<(NameBuf, ZoneRole<'_>)> = self
            .settings
            .zones
            .iter()
            .map(|z| (z.to_lowercase(), ZoneRole::Cluster))
            .collect();
        apexes.extend(
            self.settings
                .reverse_authoritative
                .iter()
                .chain(external.into_iter().flat_map(ExternalZones::reverse_zones))
                .map(|z| (z.to_lowercase(), ZoneRole::Reverse)),
        );
        if self.settings.reverse_zones {
            for text in ["in-addr.arpa", "ip6.arpa"] {
                if let Ok(zone) = NameBuf::from_text(text) {
                    apexes.push((zone, ZoneRole::Reverse));
                }
            }
        }
        if let Some(external) = external {
            apexes.extend(
                external
                    .forward_zones()
                    .map(|z| (z.to_lowercase(), ZoneRole::External(external))),
            );
        }
        // A zone listed twice is served once, in its first role.
        let mut seen: BTreeSet<NameBuf> = BTreeSet::new();
        apexes.retain(|(apex, _)| seen.insert(*apex));
        apexes.sort_by_key(|(zone, _)| std::cmp::Reverse(zone.wire_len()));
        let name_servers = self.name_servers();
        let dns_ips = addresses_of(&name_servers);
        let external_ips = external
            .map(|e| self.external_name_server_ips(e))
            .unwrap_or_default();
        let import_zones: Vec<NameBuf> = self
            .settings
            .import_zones()
            .map(NameBuf::to_lowercase)
            .collect();
        let zones = apexes
            .into_iter()
            .filter_map(|(apex, role)| {
                // Services are named in the cluster zones only: elsewhere the
                // one name server is the zone's own `ns.<apex>.<zone>`.
                let servers: Vec<NameServer> = match role {
                    ZoneRole::External(_) => vec![(None, external_ips.clone())],
                    ZoneRole::Cluster if !import_zones.contains(&apex) => name_servers
                        .iter()
                        .map(|(service, ips)| {
                            let target = service.and_then(|key| service_name_in(key, &apex));
                            (target, ips.clone())
                        })
                        .collect(),
                    _ => vec![(None, dns_ips.clone())],
                };
                match zone_answers(&apex, role, serial, &self.settings, &servers) {
                    Ok(answers) => Some(answers),
                    Err(error) => {
                        tracing::error!(zone = %apex, %error, "zone answers cannot be encoded; zone not served");
                        None
                    }
                }
            })
            .collect();
        Zones { zones, serial }
    }
}
