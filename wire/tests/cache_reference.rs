//! Property tests of the cache's entries: an upstream reply encoded by
//! hickory-proto (with its own compression), stored with
//! [`CachedAnswer::from_upstream`] and served with
//! [`CachedAnswer::write_reply`] for any case variant of the name and any
//! age, parses with hickory-proto into exactly the message a fresh encode of
//! the kept records, with the aged TTLs, gives: the same header, the
//! client's question byte for byte, the answer chain in order, nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use kubewire_wire::{
    CacheKind, CachedAnswer, NameBuf, NotCached, Transport, TtlPolicy, TtlView,
    check_upstream_reply, parse_query,
};
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,10}"
}

fn name() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(label(), 1..3),
        prop::sample::select(vec!["example.com", "example.net", "cdn.example.org"]),
    )
        .prop_map(|(mut labels, suffix)| {
            labels.push(suffix.to_string());
            labels.join(".")
        })
}

fn hname(text: &str) -> Name {
    Name::from_ascii(format!("{text}.")).unwrap()
}

fn case_variant(name: &str, mask: &[bool]) -> String {
    name.chars()
        .zip(mask.iter().cycle())
        .map(|(c, &upper)| if upper { c.to_ascii_uppercase() } else { c })
        .collect()
}

fn query_bytes(qname: &str, id: u16, edns: Option<u16>) -> Vec<u8> {
    let mut packet = id.to_be_bytes().to_vec();
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    packet.extend_from_slice(NameBuf::from_text(qname).unwrap().as_wire());
    packet.extend_from_slice(&[0, 1, 0, 1]);
    if let Some(size) = edns {
        packet.extend_from_slice(&[0, 0, 41]);
        packet.extend_from_slice(&size.to_be_bytes());
        packet.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    packet
}

/// One upstream reply: a CNAME chain from the question to addresses, or an
/// NXDOMAIN with the zone's SOA; plus records for other names.
#[derive(Clone, Debug)]
struct Case {
    qname: String,
    chain: Vec<(String, u32)>,
    addresses: Vec<([u8; 4], u32)>,
    negative: Option<(u32, u32)>,
    noise: Vec<(String, [u8; 4])>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        name(),
        prop::collection::vec((name(), 0u32..100_000), 0..3),
        prop::collection::vec((any::<[u8; 4]>(), 0u32..100_000), 1..6),
        prop::option::of((0u32..100_000, 0u32..100_000)),
        prop::collection::vec((name(), any::<[u8; 4]>()), 0..3),
    )
        .prop_map(|(qname, chain, addresses, negative, noise)| Case {
            qname,
            chain,
            addresses,
            negative,
            noise,
        })
        .prop_filter("names distinct", |c| {
            let mut all: Vec<&String> = std::iter::once(&c.qname)
                .chain(c.chain.iter().map(|(n, _)| n))
                .chain(c.noise.iter().map(|(n, _)| n))
                .collect();
            let count = all.len();
            all.sort();
            all.dedup();
            all.len() == count
        })
}

/// The upstream's reply (hickory's encoding) and the records a cache must
/// keep, in order, with their TTLs as received.
fn upstream_reply(case: &Case, id: u16) -> (Vec<u8>, Vec<Record>) {
    let mut message = Message::new(id, MessageType::Response, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.metadata.recursion_available = true;
    message.add_query(Query::query(hname(&case.qname), RecordType::A));
    let mut kept = Vec::new();
    let mut owner = hname(&case.qname);
    for (target, ttl) in &case.chain {
        let record = Record::from_rdata(owner.clone(), *ttl, RData::CNAME(CNAME(hname(target))));
        kept.push(record.clone());
        message.add_answer(record);
        owner = hname(target);
    }
    for (other, ip) in &case.noise {
        let forged = Record::from_rdata(hname(other), 300, RData::A(A(Ipv4Addr::from(*ip))));
        message.add_answer(forged.clone());
        message.add_additional(forged);
        message.add_authority(Record::from_rdata(
            hname("example.com"),
            300,
            RData::NS(NS(hname(other))),
        ));
    }
    match case.negative {
        Some((soa_ttl, minimum)) => {
            message.metadata.response_code = ResponseCode::NXDomain;
            let zone = owner.base_name();
            let soa = Record::from_rdata(
                zone.clone(),
                soa_ttl,
                RData::SOA(SOA::new(
                    hname("ns.example.com"),
                    hname("hostmaster.example.com"),
                    7,
                    3600,
                    600,
                    86400,
                    minimum,
                )),
            );
            kept.push(soa.clone());
            message.add_authority(soa);
        }
        None => {
            for (ip, ttl) in &case.addresses {
                let record =
                    Record::from_rdata(owner.clone(), *ttl, RData::A(A(Ipv4Addr::from(*ip))));
                kept.push(record.clone());
                message.add_answer(record);
            }
        }
    }
    (message.to_vec().unwrap(), kept)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_hit_is_the_fresh_encode_of_the_kept_records_with_aged_ttls(
        case in case(),
        mask in prop::collection::vec(any::<bool>(), 1..16),
        min_s in 0u32..10,
        max_s in 10u32..4000,
        age_s in 0u32..5000,
        id in any::<u16>(),
        edns in prop::option::of(512u16..4096),
    ) {
        let (reply, kept) = upstream_reply(&case, 0x4242);
        let sent = query_bytes(&case.qname, 0x4242, None);
        let question = &sent[12..];
        let checked = check_upstream_reply(&reply, 0x4242, question).unwrap();
        let policy = TtlPolicy {
            success_min_s: min_s,
            success_max_s: max_s,
            denial_min_s: min_s,
            denial_max_s: max_s,
            servfail_s: 5,
        };
        // The entry's life: the smallest kept TTL (for a negative answer,
        // the smaller of the SOA's TTL and MINIMUM), clamped.
        let lowest = match case.negative {
            // The chain's CNAMEs are kept, but a denial is timed by its SOA.
            Some((soa_ttl, minimum)) => soa_ttl.min(minimum),
            None => kept.iter().map(|r| r.ttl).min().unwrap(),
        };
        let made = CachedAnswer::from_upstream(&checked, question, &policy, |_| false);
        if lowest.clamp(min_s, max_s) == 0 {
            // A TTL of 0 (with no floor) means "do not keep": not cached.
            prop_assert!(matches!(made, Err(NotCached::ZeroTtl)), "{:?}", made.err());
            return Ok(());
        }
        let entry = made.unwrap();
        prop_assert_eq!(entry.ttl_s(), lowest.clamp(min_s, max_s));
        let kind = if case.negative.is_some() { CacheKind::Denial } else { CacheKind::Success };
        prop_assert_eq!(entry.kind(), kind);

        let client_name = case_variant(&case.qname, &mask);
        let client = query_bytes(&client_name, id, edns);
        let query = parse_query(&client).unwrap();
        let mut out = vec![0u8; 65535];
        let len = entry.write_reply(&query, TtlView::Aged(age_s), Transport::Tcp, &mut out).unwrap();
        let ours = Message::from_vec(&out[..len]).unwrap();

        // The fresh encode: the kept records, each TTL capped by the entry's
        // and aged.
        let mut fresh = Message::new(id, MessageType::Response, OpCode::Query);
        fresh.metadata.recursion_desired = true;
        fresh.metadata.recursion_available = true;
        fresh.metadata.response_code = ours.metadata.response_code;
        fresh.add_query(Query::query(hname(&client_name), RecordType::A));
        for record in &kept {
            let mut record = record.clone();
            record.ttl = record.ttl.min(entry.ttl_s()).saturating_sub(age_s);
            if record.record_type() == RecordType::SOA {
                fresh.add_authority(record);
            } else {
                fresh.add_answer(record);
            }
        }
        let fresh = Message::from_vec(&fresh.to_vec().unwrap()).unwrap();
        prop_assert_eq!(&out[12..12 + client.len() - 12 - if edns.is_some() { 11 } else { 0 }],
            &client[12..client.len() - if edns.is_some() { 11 } else { 0 }]);
        prop_assert_eq!(ours.metadata.id, id);
        let expected_rcode = if case.negative.is_some() { ResponseCode::NXDomain } else { ResponseCode::NoError };
        prop_assert_eq!(ours.metadata.response_code, expected_rcode);
        prop_assert_eq!(ours.metadata.recursion_desired, fresh.metadata.recursion_desired);
        prop_assert_eq!(ours.metadata.recursion_available, fresh.metadata.recursion_available);
        prop_assert_eq!(&ours.queries, &fresh.queries);
        // hickory's record equality leaves TTLs out (RFC 2136's): compare
        // them too.
        let ttls = |records: &[Record]| records.iter().map(|r| r.ttl).collect::<Vec<_>>();
        prop_assert_eq!(&ours.answers, &fresh.answers);
        prop_assert_eq!(ttls(&ours.answers), ttls(&fresh.answers));
        prop_assert_eq!(&ours.authorities, &fresh.authorities);
        prop_assert_eq!(ttls(&ours.authorities), ttls(&fresh.authorities));
        prop_assert!(ours.additionals.is_empty());
        prop_assert_eq!(ours.edns.is_some(), edns.is_some());
        // Names equal to the question carry the client's case.
        if let Some(first) = ours.answers.first().or(ours.authorities.first())
            && first.name.to_ascii().eq_ignore_ascii_case(&format!("{}.", case.qname))
        {
            prop_assert_eq!(first.name.to_ascii(), format!("{client_name}."));
        }
    }
}
