//! Every reply well-formed: compile the fixture with every option on
//! together, with each alone and with none, then ask every name the table
//! holds, and the names its fallbacks serve, for every type, in mixed and
//! lower case, with and without EDNS, over UDP and TCP. Every reply must
//! parse with hickory-proto and pass `common::check_reply`: pointers that
//! point backwards at a label, counts that match, additional records that
//! an answer names.
//!
//! kubewire compiles every answer ahead of time, so it can check every one
//! of them before it serves: this is that check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kubewire_answer::{Compiler, Object, Response};
use kubewire_wire::{NameBuf, Transport, rtype};
use std::collections::BTreeSet;

/// Every type a name may hold, ANY, and one nobody holds (65280, private use).
const TYPES: [u16; 10] = [
    rtype::A,
    rtype::AAAA,
    rtype::SRV,
    rtype::PTR,
    rtype::TXT,
    rtype::NS,
    rtype::SOA,
    rtype::CNAME,
    255,
    65280,
];

/// Labels a wildcard's first label stands for: shorter, as long and longer
/// than `*`, and of several labels.
const STAND_INS: [&str; 4] = [
    "x",
    "zone-c",
    "us-west-2c",
    "a-much-longer-topology-zone-name.corp.example",
];

/// The configurations: none, each switch alone, and every switch together
/// (in each pod mode).
fn configurations() -> Vec<Vec<Switch>> {
    let mut all = vec![Vec::new()];
    all.extend(SWITCHES.iter().map(|s| vec![*s]));
    let every: Vec<Switch> = SWITCHES
        .iter()
        .copied()
        .filter(|s| !matches!(s, Switch::PodsDisabled | Switch::PodsVerified))
        .collect();
    for pods in [None, Some(Switch::PodsVerified), Some(Switch::PodsDisabled)] {
        all.push(every.iter().copied().chain(pods).collect());
    }
    all
}

/// `ip` as a pod name's first label: dots (or colons) become dashes.
fn dashed(ip: &std::net::IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// Every name to ask: the table's own, the names its fallbacks answer, and
/// names nothing answers, in every zone.
fn names(compiler: &Compiler, objects: &[Object]) -> BTreeSet<String> {
    let settings = compiler.settings();
    let mut zones: Vec<String> = settings.zones.iter().map(|z| z.to_string()).collect();
    if let Some(external) = &settings.external {
        zones.extend(external.zones.iter().map(|z| z.to_string()));
    }
    zones.extend(settings.reverse_authoritative.iter().map(|z| z.to_string()));
    zones.extend(["in-addr.arpa.".to_string(), "ip6.arpa.".to_string()]);
    let mut names = BTreeSet::new();
    for entry in compiler.entries() {
        let name = compiler
            .zones()
            .name_of(entry.table_key())
            .unwrap()
            .to_string();
        if let Some(rest) = name.strip_prefix("*.") {
            for stand_in in STAND_INS {
                names.insert(format!("{stand_in}.{rest}"));
            }
        }
        // `pin` has no wildcard entry: its fallback is NODATA.
        if let Some(at) = name.find(".prefer._zone.") {
            for stand_in in STAND_INS {
                names.insert(format!("{stand_in}.pin._zone.{}", &name[at + 14..]));
            }
        }
        names.insert(name);
    }
    for zone in &zones {
        for prefix in [
            "",
            "ns.dns.",
            "ns1.dns.",
            "dns.",
            "dns-version.",
            "nope.testns.svc.",
            "a.b.c.nope.",
            "_nope._tcp.hdls1.testns.svc.",
            "_http._tcp.svc1.testns.",
            "_http._tcp.svc1.testns.svc.",
            "9.9.9.",
            // Autopath's candidates: a search-path completion of a name.
            "svc1.testns.svc.cluster.local.testns.svc.",
            "kubernetes.default.svc.",
        ] {
            names.insert(format!("{prefix}{zone}"));
        }
        for object in objects {
            if let Object::Pod(pod) = object {
                for ip in &pod.ips {
                    let namespace = &pod.key.namespace;
                    names.insert(format!("{}.{namespace}.pod.{zone}", dashed(ip)));
                    names.insert(format!("{}.other.pod.{zone}", dashed(ip)));
                }
            }
        }
    }
    names.insert("outside.example.org.".into());
    names.insert(".".into());
    names
}

/// `name` with every other letter upper case (from the first, or the second).
fn mixed_case(name: &str, from_second: bool) -> String {
    let mut upper = from_second;
    name.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                upper = !upper;
                if upper {
                    return c.to_ascii_uppercase();
                }
            }
            c
        })
        .collect()
}

/// A query for `name`, with or without an OPT record (4096 bytes, DO clear).
fn query_bytes(name: &str, qtype: u16, id: u16, edns: bool) -> Vec<u8> {
    let mut packet = id.to_be_bytes().to_vec();
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    packet.extend_from_slice(NameBuf::from_text(name).unwrap().as_wire());
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&[0, 1]);
    if edns {
        packet.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    }
    packet
}

#[test]
fn every_reply_to_every_name_under_every_option_is_well_formed() {
    let objects = option_objects();
    let mut out = vec![0u8; 65535];
    let mut asked = 0usize;
    let mut failures = Vec::new();
    for switches in configurations() {
        let compiler = compile(settings_with(&switches), objects.clone(), true);
        let mut table = table_from(&compiler);
        let names = names(&compiler, &objects);
        for (n, name) in names.iter().enumerate() {
            for &qtype in &TYPES {
                // Each name four ways: the two cases, EDNS on and off, and
                // both transports, crossed so that each pair meets.
                for (lower, edns, transport) in [
                    (true, false, Transport::Udp),
                    (false, true, Transport::Udp),
                    (false, false, Transport::Tcp),
                    (true, true, Transport::Tcp),
                ] {
                    let asked_name = if lower {
                        name.clone()
                    } else {
                        mixed_case(name, n % 2 == 1)
                    };
                    let query = query_bytes(&asked_name, qtype, 0xBEEF, edns);
                    asked += 1;
                    let len = match table.respond(&query, transport, &mut out) {
                        Response::Reply { len, .. } | Response::NotOurs { len, .. } => len,
                        Response::Drop => {
                            failures
                                .push(format!("{switches:?} {asked_name} type {qtype}: dropped"));
                            continue;
                        }
                    };
                    let reply = &out[..len];
                    let limit = match (transport, edns) {
                        (Transport::Udp, false) => 512,
                        (Transport::Udp, true) => 4096,
                        (Transport::Tcp, _) => 65535,
                    };
                    if len > limit {
                        failures.push(format!(
                            "{switches:?} {asked_name} type {qtype} {transport:?}: {len} bytes over {limit}"
                        ));
                    }
                    if let Err(error) = check_reply(&query, reply) {
                        failures.push(format!(
                            "{switches:?} {asked_name} type {qtype} {transport:?} edns={edns}: {error}"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {asked} replies are not well-formed; the first 20:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    // The walk reached every option's names (a guard against a fixture
    // that no longer holds them).
    assert!(asked > 100_000, "only {asked} queries asked");
}

/// The case that shipped malformed: a `prefer` name for a zone with no
/// endpoint, answered from the wildcard entry, whose glue pointed nine
/// bytes past the SRV targets. Parsed by hickory, each glue record's owner
/// must be an SRV target.
#[test]
fn zonal_prefer_fallback_srv_glue_names_its_targets() {
    let mut t = tester(settings_with(&[Switch::Zonal]), zonal_objects());
    let web = "web.z.svc.cluster.local";
    for zone in STAND_INS {
        let (_, message) = t.ask(&format!("{zone}.prefer._zone.{web}"), "SRV");
        let message = message.unwrap();
        let mut targets: Vec<String> = message
            .answers
            .iter()
            .map(|r| record_text(r).rsplit(' ').next().unwrap().to_string())
            .collect();
        targets.sort();
        let mut glue: Vec<String> = message
            .additionals
            .iter()
            .map(|r| r.name.to_string())
            .collect();
        glue.sort();
        assert_eq!(
            targets,
            [
                format!("a1.{web}."),
                format!("a2.{web}."),
                format!("b1.{web}."),
                format!("none.{web}.")
            ],
            "{zone}: every endpoint answers"
        );
        assert_eq!(glue, targets, "{zone}: the glue names the targets");
    }
}
