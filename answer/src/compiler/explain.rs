//! `explain`: what the compiler knows of one name, for people asking why a
//! name answers what it answers. Read on request, off the query path; it
//! scans where a lookup table would cost memory on every node (a debug
//! request may take milliseconds, a Service must not take more bytes).

use super::*;
use crate::model::Stamp;
use kubewire_wire::{address_from_dashed, address_from_reverse};

/// What a name's lookup gives, as a core would answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Records of the asked type (`records` in the answer section).
    Answer {
        /// The reply's RCODE.
        rcode: Rcode,
        /// Records in the answer section.
        records: u16,
    },
    /// The name exists without records of the asked type.
    NoData,
    /// The name does not exist.
    NxDomain,
    /// SERVFAIL: the first sync has not completed.
    NotSynced,
    /// Not answered from cluster data: forwarded upstream (or REFUSED when
    /// nothing is forwarded).
    NotOurs,
}

/// Why a name has no records of the asked type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The name is in no zone served from cluster data.
    OutsideZones,
    /// No object gives the name, and the zone falls through (CoreDNS's
    /// `fallthrough`): it is passed on.
    FellThrough,
    /// The first sync with the source has not completed.
    NotSynced,
    /// The namespace has neither a Namespace object nor a Service.
    NoNamespace {
        /// The namespace asked for.
        namespace: String,
    },
    /// No Service (or ServiceImport, in a multicluster zone) of that name
    /// in that namespace.
    NoService {
        /// The namespace asked for.
        namespace: String,
        /// The name asked for.
        name: String,
        /// Namespaces that hold one of that name.
        elsewhere: Vec<String>,
    },
    /// A headless Service with no endpoint that answers.
    HeadlessNoReady {
        /// The Service.
        service: ObjectKey,
        /// Its endpoints that are not ready (and not published anyway).
        not_ready: usize,
    },
    /// `ignore_empty_service`: a ClusterIP Service without a ready endpoint
    /// does not exist.
    EmptyServiceIgnored {
        /// The Service.
        service: ObjectKey,
        /// Its endpoints that are not ready.
        not_ready: usize,
    },
    /// The Service has no endpoint of that name.
    NoEndpoint {
        /// The Service.
        service: ObjectKey,
        /// The endpoint label asked for.
        endpoint: String,
        /// Endpoints the Service has.
        endpoints: usize,
    },
    /// The Service has no port of that name and protocol.
    NoPort {
        /// The Service.
        service: ObjectKey,
        /// `_name._proto`, as asked.
        port: String,
    },
    /// Pod names are off (`pod_mode = "disabled"`).
    PodsDisabled,
    /// `verified` pod mode: no pod in the namespace holds the address.
    PodUnknown {
        /// The namespace asked for.
        namespace: String,
        /// The address in the name, if it is one.
        address: Option<IpAddr>,
    },
    /// A reverse name whose address no Service or endpoint has.
    NoAddressOwner {
        /// The address.
        address: Option<IpAddr>,
    },
    /// The name exists with records of other types (NODATA).
    OtherTypes {
        /// The types it has.
        types: Vec<u16>,
    },
    /// The name does not have the shape of any cluster name.
    NoSuchShape,
}

/// An object an answer was compiled from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceObject {
    /// Its kind.
    pub kind: Kind,
    /// Namespace and name.
    pub key: ObjectKey,
    /// Its `resourceVersion` and when it arrived (zero for a Namespace,
    /// whose name is all DNS takes).
    pub stamp: Stamp,
}

/// The zone a name lies in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneFacts {
    /// The apex.
    pub apex: NameBuf,
    /// A cluster zone (not reverse or `k8s_external`).
    pub cluster: bool,
    /// Unknown names are NXDOMAIN (else they are passed on).
    pub authoritative: bool,
}

/// What the compiler knows of one name and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameFacts {
    /// The name, lowercase.
    pub name: NameBuf,
    /// The type asked.
    pub qtype: u16,
    /// Its zone, if it lies in one.
    pub zone: Option<ZoneFacts>,
    /// What a core answers.
    pub outcome: Outcome,
    /// The types the name has records of.
    pub types: Vec<u16>,
    /// The objects its records were compiled from; empty for the zone's own
    /// names and for names synthesised per query (pods).
    pub sources: Vec<SourceObject>,
    /// The revision whose delta last changed the names of the unit that
    /// owns it, if known.
    pub changed_revision: Option<u64>,
    /// Why there is no answer, when there is none.
    pub reason: Option<Reason>,
}

fn text(label: &[u8]) -> String {
    String::from_utf8_lossy(label).into_owned()
}

impl Compiler {
    /// What the compiler knows of `name` asked with `qtype`.
    pub fn explain(&self, name: &NameBuf, qtype: u16) -> NameFacts {
        let key = name.to_lowercase();
        let zone = self.zones.find(&key).map(|(_, z)| z);
        let mut facts = NameFacts {
            name: key,
            qtype,
            zone: zone.map(|z| ZoneFacts {
                apex: z.apex,
                cluster: z.cluster,
                authoritative: z.authoritative,
            }),
            outcome: Outcome::NotOurs,
            types: Vec::new(),
            sources: Vec::new(),
            changed_revision: None,
            reason: None,
        };
        let entry = self
            .zones
            .table_key(&facts.name)
            .and_then(|key| self.names.get(key.as_bytes()));
        if let Some(entry) = entry {
            facts.types = entry.types().collect();
            match entry.answer(qtype) {
                Some(answer) => {
                    facts.outcome = Outcome::Answer {
                        rcode: answer.rcode(),
                        records: answer.counts()[0],
                    }
                }
                None => {
                    facts.outcome = Outcome::NoData;
                    facts.reason = Some(Reason::OtherTypes {
                        types: facts.types.clone(),
                    });
                }
            }
            self.note_sources(entry.owner(), &mut facts);
            return facts;
        }
        let Some(zone) = zone else {
            facts.reason = Some(Reason::OutsideZones);
            return facts;
        };
        if facts.name.wire_len() == zone.apex.wire_len() {
            facts.types = zone.apex_answers.iter().map(|(t, _)| *t).collect();
            facts.outcome = match zone.apex_answer(qtype) {
                Some(answer) => Outcome::Answer {
                    rcode: answer.rcode(),
                    records: answer.counts()[0],
                },
                None => Outcome::NoData,
            };
            return facts;
        }
        if !zone.authoritative {
            facts.reason = Some(Reason::NoAddressOwner {
                address: address_from_reverse(facts.name.as_wire()),
            });
            return facts;
        }
        let relative: Vec<String> = {
            let wire = facts.name.as_wire();
            let relative = &wire[..wire.len() - zone.apex.wire_len()];
            kubewire_wire::name::labels(relative).map(text).collect()
        };
        if let Some(outcome) = self.pod_outcome(zone, &relative, qtype, &mut facts) {
            facts.outcome = outcome;
            return facts;
        }
        if !self.synced {
            facts.outcome = Outcome::NotSynced;
            facts.reason = Some(Reason::NotSynced);
            return facts;
        }
        if zone.fallthrough {
            facts.reason = Some(Reason::FellThrough);
            return facts;
        }
        facts.outcome = Outcome::NxDomain;
        let imports = self
            .settings
            .import_zones()
            .any(|z| z.ends_with(&zone.apex));
        facts.reason = Some(self.absence(&relative, imports));
        facts
    }

    /// `<dashed-ip>.<ns>.pod.<zone>`: the outcome of a pod name, or `None`
    /// when the name is not one.
    fn pod_outcome(
        &self,
        zone: &ZoneAnswers,
        relative: &[String],
        qtype: u16,
        facts: &mut NameFacts,
    ) -> Option<Outcome> {
        let [dashed, namespace, pod] = relative else {
            return None;
        };
        if pod != "pod" {
            return None;
        }
        if zone.pod_templates.is_none() {
            facts.reason = Some(Reason::PodsDisabled);
            return Some(Outcome::NxDomain);
        }
        let address = address_from_dashed(dashed.as_bytes())?;
        let known = if zone.pods_verified {
            // The pods holding it are its sources (the pod index keeps no
            // resourceVersion: a pod costs 32 bytes there).
            for (ns, name) in self.pods.pods_at(address) {
                if ns.eq_ignore_ascii_case(namespace) {
                    facts.sources.push(SourceObject {
                        kind: Kind::Pod,
                        key: ObjectKey::new(ns, name),
                        stamp: Stamp::default(),
                    });
                }
            }
            !facts.sources.is_empty()
        } else {
            let mut namespace_name = NameBuf::from_text(&format!("{namespace}.pod")).ok()?;
            namespace_name = namespace_name.append(&zone.apex).ok()?;
            let key = self.zones.table_key(&namespace_name)?;
            self.names.get(key.as_bytes()).is_some()
        };
        if !known {
            facts.reason = Some(if zone.pods_verified {
                Reason::PodUnknown {
                    namespace: namespace.clone(),
                    address: Some(address),
                }
            } else {
                Reason::NoNamespace {
                    namespace: namespace.clone(),
                }
            });
            return Some(Outcome::NxDomain);
        }
        facts.types = vec![if address.is_ipv4() {
            rtype::A
        } else {
            rtype::AAAA
        }];
        if facts.types[0] == qtype {
            Some(Outcome::Answer {
                rcode: Rcode::NOERROR,
                records: 1,
            })
        } else {
            facts.reason = Some(Reason::OtherTypes {
                types: facts.types.clone(),
            });
            Some(Outcome::NoData)
        }
    }

    /// Why a name of a cluster zone that no entry holds does not exist.
    fn absence(&self, relative: &[String], imports: bool) -> Reason {
        let Some(tail) = relative.last() else {
            return Reason::NoSuchShape;
        };
        if tail == "pod" && relative.len() == 2 {
            return Reason::NoNamespace {
                namespace: relative[0].clone(),
            };
        }
        if tail != "svc" {
            return Reason::NoSuchShape;
        }
        let (namespace, service_name, below) = match relative {
            [namespace, _] => {
                return Reason::NoNamespace {
                    namespace: namespace.clone(),
                };
            }
            [rest @ .., service, namespace, _] => (namespace, service, rest),
            _ => return Reason::NoSuchShape,
        };
        let key = ObjectKey::new(namespace.clone(), service_name.clone());
        let exists = if imports {
            self.imports.get(&key).is_some()
        } else {
            self.services.get(&key).is_some()
        };
        if !exists {
            let mut elsewhere: Vec<String> = if imports {
                self.imports
                    .keys()
                    .filter(|k| k.name == *service_name)
                    .map(|k| k.namespace.to_string())
                    .collect()
            } else {
                self.services
                    .keys()
                    .filter(|k| k.name == *service_name)
                    .map(|k| k.namespace.to_string())
                    .collect()
            };
            elsewhere.sort();
            if elsewhere.is_empty()
                && !self.namespaces.contains(namespace.as_str())
                && !self.services_per_namespace.contains_key(namespace.as_str())
            {
                return Reason::NoNamespace {
                    namespace: namespace.clone(),
                };
            }
            return Reason::NoService {
                namespace: namespace.clone(),
                name: service_name.clone(),
                elsewhere,
            };
        }
        let lists = if imports {
            &self.slices_by_import
        } else {
            &self.slices_by_service
        };
        let slices = self.slices_of(lists, &key);
        let endpoints = slices.iter().map(|s| s.endpoints.len()).sum::<usize>();
        let not_ready = slices
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| !e.ready)
            .count();
        if below.is_empty() {
            let service = self.services.get(&key);
            return match service.map(|s| &s.kind) {
                Some(ServiceKind::ClusterIp(_)) if self.settings.ignore_empty_service => {
                    Reason::EmptyServiceIgnored {
                        service: key,
                        not_ready,
                    }
                }
                _ => Reason::HeadlessNoReady {
                    service: key,
                    not_ready,
                },
            };
        }
        if let [port, protocol] = below
            && port.starts_with('_')
            && protocol.starts_with('_')
        {
            return Reason::NoPort {
                service: key,
                port: format!("{port}.{protocol}"),
            };
        }
        if let [endpoint] = below {
            return Reason::NoEndpoint {
                service: key,
                endpoint: endpoint.clone(),
                endpoints,
            };
        }
        Reason::NoSuchShape
    }

    /// The objects behind the unit `owner` (or, for a PTR name, behind each
    /// unit pointing at its address), and the revision that last changed it.
    fn note_sources(&self, owner: u32, facts: &mut NameFacts) {
        let mut units: Vec<u32> = Vec::new();
        if owner == PTR_OWNER {
            if let Some(ip) = address_from_reverse(facts.name.as_wire()) {
                units.extend(self.ptr_sources.ids(ip));
            }
        } else {
            units.push(owner);
        }
        for id in units {
            let Some(state) = self.units.get(id as usize) else {
                continue;
            };
            if state.changed_revision > 0 {
                facts.changed_revision = facts.changed_revision.max(Some(state.changed_revision));
            }
            match &state.unit {
                Some(Unit::Service(key)) => {
                    if let Some(service) = self.services.get(key) {
                        facts.sources.push(SourceObject {
                            kind: Kind::Service,
                            key: key.clone(),
                            stamp: service.stamp,
                        });
                    }
                    self.note_slices(&self.slices_by_service, key, facts);
                }
                Some(Unit::Import(key)) => {
                    if let Some(import) = self.imports.get(key) {
                        facts.sources.push(SourceObject {
                            kind: Kind::Import,
                            key: key.clone(),
                            stamp: import.stamp,
                        });
                    }
                    self.note_slices(&self.slices_by_import, key, facts);
                }
                Some(Unit::Namespace(namespace)) => {
                    if self.namespaces.contains(namespace.as_str()) {
                        facts.sources.push(SourceObject {
                            kind: Kind::Namespace,
                            key: ObjectKey::new("", namespace.clone()),
                            stamp: Stamp::default(),
                        });
                    }
                    // The first three by name, the same on every ask.
                    let mut services: Vec<&ServiceModel> = self
                        .services
                        .iter()
                        .map(|s| &**s)
                        .filter(|s| *s.key.namespace == **namespace)
                        .collect();
                    services.sort_by(|a, b| a.key.cmp(&b.key));
                    services.truncate(3);
                    facts
                        .sources
                        .extend(services.into_iter().map(|s| SourceObject {
                            kind: Kind::Service,
                            key: s.key.clone(),
                            stamp: s.stamp,
                        }));
                }
                Some(Unit::Zone) | None => {}
            }
        }
    }

    fn note_slices(
        &self,
        lists: &super::links::SliceLists,
        key: &ObjectKey,
        facts: &mut NameFacts,
    ) {
        for slice in self.slices_of(lists, key) {
            facts.sources.push(SourceObject {
                kind: Kind::Slice,
                key: slice.key.clone(),
                stamp: slice.stamp,
            });
        }
    }

    /// The pods holding `ip` (none unless pods are watched).
    pub fn pods_at(&self, ip: IpAddr) -> Vec<ObjectKey> {
        self.pods
            .pods_at(ip)
            .map(|(namespace, name)| ObjectKey::new(namespace, name))
            .collect()
    }

    /// For each of `ips` held by pods of one namespace alone, that
    /// namespace (one scan of the pods; for `top`).
    pub fn pod_namespaces(&self, ips: &[IpAddr]) -> std::collections::HashMap<IpAddr, String> {
        let wanted: Set<IpAddr> = ips.iter().copied().collect();
        let mut found: std::collections::HashMap<IpAddr, Option<String>> =
            std::collections::HashMap::new();
        self.pods.each_address(|namespace, ip, host_network| {
            if host_network || !wanted.contains(&ip) {
                return;
            }
            found
                .entry(ip)
                .and_modify(|held| {
                    if held.as_deref() != Some(namespace) {
                        *held = None;
                    }
                })
                .or_insert_with(|| Some(namespace.to_string()));
        });
        found
            .into_iter()
            .filter_map(|(ip, namespace)| Some((ip, namespace?)))
            .collect()
    }

    /// The addresses of pod `key`, if the compiler holds it.
    pub fn pod_ips(&self, key: &ObjectKey) -> Option<Vec<IpAddr>> {
        self.pods.ips_of(&key.namespace, &key.name)
    }

    /// Whether pods are kept (verified pod mode or autopath).
    pub fn keeps_pods(&self) -> bool {
        self.settings.pod_mode == PodMode::Verified || self.settings.autopath
    }
}

/// One name a stub resolver tries, with what it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The name tried.
    pub name: NameBuf,
    /// What it gets.
    pub facts: NameFacts,
    /// Whether the walk stops here: records came back, or the name as given
    /// went upstream (whose answer ends a walk either way).
    pub ends_walk: bool,
}

/// What a glibc stub resolver in a pod sends for one name and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchWalk {
    /// The names in the order the resolver tries them (all of them, also
    /// past the one that ends the walk).
    pub candidates: Vec<Candidate>,
    /// Round trips until the walk ends, without autopath.
    pub round_trips: usize,
    /// Round trips with autopath (whether or not it is on): one when the
    /// first name tried is the first search domain's (the server walks the
    /// rest), else as without.
    pub round_trips_autopath: usize,
}

impl Compiler {
    /// The names a pod in `namespace` with the usual resolv.conf
    /// (`search <ns>.svc.<zone> svc.<zone> <zone>` then `host_search`, and
    /// `ndots`) tries for `name`, each with what the cluster data gives.
    /// Names outside the cluster zones go upstream: those built from the
    /// search list are taken to miss there, the name as given to answer.
    pub fn search_walk(
        &self,
        name: &str,
        namespace: &str,
        qtype: u16,
        host_search: &[NameBuf],
        ndots: usize,
    ) -> Result<SearchWalk, kubewire_wire::NameError> {
        let absolute = name.ends_with('.');
        let given = NameBuf::from_text(name.trim_end_matches('.'))?;
        let mut search: Vec<NameBuf> = Vec::new();
        if let Some(zone) = self.settings.service_zones().next() {
            let svc = NameBuf::from_text("svc")?.append(zone)?;
            if let Ok(namespaced) = NameBuf::from_text(namespace).and_then(|n| n.append(&svc)) {
                search.push(namespaced);
            }
            search.push(svc);
            search.push(*zone);
        }
        search.extend(host_search.iter().copied());
        let dots = name.trim_end_matches('.').matches('.').count();
        let mut names: Vec<(NameBuf, bool)> = Vec::new();
        if absolute {
            names.push((given, true));
        } else {
            let searched = search
                .iter()
                .filter_map(|domain| given.append(domain).ok())
                .map(|n| (n, false));
            if dots >= ndots {
                names.push((given, true));
                names.extend(searched);
            } else {
                names.extend(searched);
                names.push((given, true));
            }
        }
        let mut walk = SearchWalk {
            candidates: Vec::with_capacity(names.len()),
            round_trips: 0,
            round_trips_autopath: 0,
        };
        for (name, as_given) in names {
            let facts = self.explain(&name, qtype);
            let ends_walk = match facts.outcome {
                Outcome::Answer { records, .. } => records > 0,
                Outcome::NotOurs => as_given,
                _ => false,
            };
            if walk.round_trips == 0 && ends_walk {
                walk.round_trips = walk.candidates.len() + 1;
            }
            walk.candidates.push(Candidate {
                name,
                facts,
                ends_walk,
            });
        }
        if walk.round_trips == 0 {
            walk.round_trips = walk.candidates.len();
        }
        let starts_with_search = !absolute && dots < ndots && !search.is_empty();
        walk.round_trips_autopath = if starts_with_search {
            1
        } else {
            walk.round_trips
        };
        Ok(walk)
    }
}
