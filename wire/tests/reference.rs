//! Property tests: any prepared answer, assembled for any case variant of its
//! name, with or without EDNS and at any payload size, parses with
//! hickory-proto (the reference parser) into exactly the intended records,
//! and the question comes back byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record};
use kubewire_wire::{
    AnswerBuilder, AnswerRef, NameBuf, Owner, PreparedAnswer, Rcode, Rdata, Section, Transport,
    assemble_reply, parse_query,
};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// What a record should be, independent of either encoder.
#[derive(Clone, Debug)]
enum Spec {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Ptr(String),
    Ns(String),
    Srv(u16, u16, u16, String),
    Txt(Vec<Vec<u8>>),
    Soa(String, String, u32),
}

#[derive(Clone, Debug)]
struct RecordSpec {
    section: Section,
    /// `None` is the question name.
    owner: Option<String>,
    ttl: u32,
    data: Spec,
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,12}"
}

/// Names under a small set of suffixes, so that compression gets exercised.
fn name_under(suffixes: Vec<String>) -> impl Strategy<Value = String> {
    (
        prop::collection::vec(label(), 0..3),
        prop::sample::select(suffixes),
    )
        .prop_map(|(labels, suffix)| {
            let mut parts = labels;
            parts.push(suffix);
            parts.join(".")
        })
}

fn spec(names: BoxedStrategy<String>) -> impl Strategy<Value = Spec> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| Spec::A(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| Spec::Aaaa(Ipv6Addr::from(b))),
        names.clone().prop_map(Spec::Cname),
        names.clone().prop_map(Spec::Ptr),
        names.clone().prop_map(Spec::Ns),
        (any::<u16>(), any::<u16>(), any::<u16>(), names.clone())
            .prop_map(|(p, w, port, t)| Spec::Srv(p, w, port, t)),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..4).prop_map(Spec::Txt),
        (names.clone(), names, any::<u32>()).prop_map(|(m, r, s)| Spec::Soa(m, r, s)),
    ]
}

fn nb(text: &str) -> NameBuf {
    NameBuf::from_text(text).unwrap()
}

fn hname(text: &str) -> Name {
    Name::from_ascii(format!("{text}.")).unwrap()
}

fn build(
    builder: &mut AnswerBuilder,
    records: &[RecordSpec],
) -> Result<(), kubewire_wire::BuildError> {
    for record in records {
        builder.section(record.section)?;
        let owner_name = record.owner.as_deref().map(nb);
        let owner = owner_name.as_ref().map_or(Owner::Question, Owner::Name);
        let names: Vec<NameBuf> = match &record.data {
            Spec::Cname(n) | Spec::Ptr(n) | Spec::Ns(n) | Spec::Srv(_, _, _, n) => vec![nb(n)],
            Spec::Soa(m, r, _) => vec![nb(m), nb(r)],
            _ => vec![],
        };
        let strings: Vec<&[u8]> = match &record.data {
            Spec::Txt(t) => t.iter().map(Vec::as_slice).collect(),
            _ => vec![],
        };
        let rdata = match &record.data {
            Spec::A(ip) => Rdata::A(*ip),
            Spec::Aaaa(ip) => Rdata::Aaaa(*ip),
            Spec::Cname(_) => Rdata::Cname(&names[0]),
            Spec::Ptr(_) => Rdata::Ptr(&names[0]),
            Spec::Ns(_) => Rdata::Ns(&names[0]),
            Spec::Srv(priority, weight, port, _) => Rdata::Srv {
                priority: *priority,
                weight: *weight,
                port: *port,
                target: &names[0],
            },
            Spec::Txt(_) => Rdata::Txt(&strings),
            Spec::Soa(_, _, serial) => Rdata::Soa {
                mname: &names[0],
                rname: &names[1],
                serial: *serial,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: 5,
            },
        };
        builder.push(owner, record.ttl, rdata)?;
    }
    Ok(())
}

fn expected_rdata(spec: &Spec) -> RData {
    match spec {
        Spec::A(ip) => RData::A(A(*ip)),
        Spec::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        Spec::Cname(n) => RData::CNAME(CNAME(hname(n))),
        Spec::Ptr(n) => RData::PTR(PTR(hname(n))),
        Spec::Ns(n) => RData::NS(NS(hname(n))),
        Spec::Srv(p, w, port, t) => RData::SRV(SRV::new(*p, *w, *port, hname(t))),
        Spec::Txt(t) => RData::TXT(TXT::from_bytes(t.iter().map(Vec::as_slice).collect())),
        Spec::Soa(m, r, serial) => {
            RData::SOA(SOA::new(hname(m), hname(r), *serial, 7200, 1800, 86400, 5))
        }
    }
}

/// A random case variant of a lower-case name.
fn case_variant(name: &str, mask: &[bool]) -> String {
    name.chars()
        .zip(mask.iter().cycle())
        .map(|(c, &upper)| if upper { c.to_ascii_uppercase() } else { c })
        .collect()
}

fn query_bytes(qname: &str, qtype: u16, id: u16, edns: Option<u16>) -> Vec<u8> {
    let mut packet = id.to_be_bytes().to_vec();
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    packet.extend_from_slice(nb(qname).as_wire());
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&[0, 1]);
    if let Some(size) = edns {
        packet.extend_from_slice(&[0, 0, 41]);
        packet.extend_from_slice(&size.to_be_bytes());
        packet.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    packet
}

/// Checks one reply against the intended records.
fn check_reply(
    query: &[u8],
    qname_sent: &str,
    answer: &PreparedAnswer,
    records: &[RecordSpec],
    rcode: Rcode,
    transport: Transport,
    edns: Option<u16>,
) -> Result<(), TestCaseError> {
    let parsed = parse_query(query).unwrap();
    let mut out = vec![0u8; 65535];
    let len = assemble_reply(&parsed, answer.as_ref(), 0, transport, true, &mut out).unwrap();
    let reply = &out[..len];
    // The flat form (how names keep their answers) gives the same reply,
    // read back from among other bytes, and reads back equal.
    let mut flat = vec![0xAB; 3];
    answer.encode_into(&mut flat);
    prop_assert_eq!(flat.len(), 3 + answer.encoded_len());
    flat.extend_from_slice(b"after");
    let (decoded, rest) = AnswerRef::decode(&flat[3..]).unwrap();
    prop_assert_eq!(rest, b"after");
    prop_assert_eq!(&decoded.to_owned(), answer);
    let mut again = vec![0u8; 65535];
    let again_len = assemble_reply(&parsed, decoded, 0, transport, true, &mut again).unwrap();
    prop_assert_eq!(&again[..again_len], reply);
    for cut in [0, 1, answer.encoded_len() / 2, answer.encoded_len() - 1] {
        prop_assert!(
            AnswerRef::decode(&flat[3..3 + cut]).is_none(),
            "decoded {} bytes",
            cut
        );
    }
    // The question, byte for byte.
    let question_len = query.len() - 12 - if edns.is_some() { 11 } else { 0 };
    prop_assert_eq!(&reply[12..12 + question_len], &query[12..12 + question_len]);
    prop_assert_eq!(&reply[..2], &query[..2]);

    let message = Message::from_vec(reply).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(u16::from(message.metadata.response_code), rcode.0);
    prop_assert!(message.metadata.authoritative);
    prop_assert_eq!(message.edns.is_some(), edns.is_some());

    let limit = match (transport, edns) {
        (Transport::Tcp, _) => 65535,
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(size)) => usize::from(size.clamp(512, 1232)),
    };
    if message.metadata.truncation {
        prop_assert!(transport == Transport::Udp);
        let opt_len = if edns.is_some() { 11 } else { 0 };
        let full_len = 12 + question_len + answer.tail_len() + opt_len;
        prop_assert!(full_len > limit);
        prop_assert!(message.answers.is_empty() && message.authorities.is_empty());
        return Ok(());
    }
    prop_assert!(len <= limit);
    let sections: [&[Record]; 3] = [&message.answers, &message.authorities, &message.additionals];
    for (index, section) in [Section::Answer, Section::Authority, Section::Additional]
        .iter()
        .enumerate()
    {
        let want: Vec<&RecordSpec> = records.iter().filter(|r| r.section == *section).collect();
        let got = sections[index];
        prop_assert_eq!(got.len(), want.len());
        for (got, want) in got.iter().zip(want) {
            let owner = got.name.to_ascii();
            match &want.owner {
                // The owner is the question as sent: the client's case.
                None => prop_assert_eq!(owner, format!("{qname_sent}.")),
                Some(n) => prop_assert!(
                    owner.eq_ignore_ascii_case(&format!("{n}.")),
                    "{owner} vs {n}"
                ),
            }
            prop_assert_eq!(got.ttl, want.ttl);
            prop_assert_eq!(&got.data, &expected_rdata(&want.data));
        }
    }
    Ok(())
}

fn records(names: BoxedStrategy<String>) -> impl Strategy<Value = Vec<RecordSpec>> {
    let record = (
        prop::sample::select(vec![
            Section::Answer,
            Section::Authority,
            Section::Additional,
        ]),
        prop::option::of(names.clone()),
        0u32..100_000,
        spec(names),
    )
        .prop_map(|(section, owner, ttl, data)| RecordSpec {
            section,
            owner,
            ttl,
            data,
        });
    prop::collection::vec(record, 0..12).prop_map(|mut records| {
        records.sort_by_key(|r| r.section);
        records
    })
}

fn exact_case() -> impl Strategy<Value = (String, Vec<RecordSpec>)> {
    (
        prop::collection::vec(label(), 1..4),
        prop::sample::select(vec!["cluster.local", "example.com"]),
    )
        .prop_flat_map(|(labels, zone)| {
            let qname = format!("{}.{zone}", labels.join("."));
            let suffixes = vec![
                qname.clone(),
                zone.to_string(),
                "svc.cluster.local".into(),
                "other.org".into(),
            ];
            (Just(qname), records(name_under(suffixes).boxed()))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn exact_answers_match_reference(
        (qname, records) in exact_case(),
        mask in prop::collection::vec(any::<bool>(), 1..16),
        rcode in prop::sample::select(vec![Rcode::NOERROR, Rcode::NXDOMAIN]),
        edns in prop::option::of(any::<u16>()),
        id in any::<u16>(),
        tcp in any::<bool>(),
    ) {
        let mut builder = AnswerBuilder::new(&nb(&qname));
        builder.set_rcode(rcode);
        build(&mut builder, &records).unwrap();
        let answer = builder.finish().unwrap();
        let sent = case_variant(&qname, &mask);
        let query = query_bytes(&sent, 1, id, edns);
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        check_reply(&query, &sent, &answer, &records, rcode, transport, edns)?;
    }

    #[test]
    fn zone_answers_serve_any_name_in_the_zone(
        prefix in prop::collection::vec(label(), 0..5),
        serial in any::<u32>(),
        mask in prop::collection::vec(any::<bool>(), 1..16),
        edns in prop::option::of(any::<u16>()),
    ) {
        let zone = "cluster.local";
        let records = vec![RecordSpec {
            section: Section::Authority,
            owner: Some(zone.to_string()),
            ttl: 5,
            data: Spec::Soa(format!("ns.dns.{zone}"), format!("hostmaster.{zone}"), serial),
        }];
        let mut builder = AnswerBuilder::for_zone(&nb(zone));
        builder.set_rcode(Rcode::NXDOMAIN);
        build(&mut builder, &records).unwrap();
        let answer = builder.finish().unwrap();
        let qname = if prefix.is_empty() { zone.to_string() } else { format!("{}.{zone}", prefix.join(".")) };
        let sent = case_variant(&qname, &mask);
        let query = query_bytes(&sent, 28, 7, edns);
        check_reply(&query, &sent, &answer, &records, Rcode::NXDOMAIN, Transport::Udp, edns)?;
    }

    #[test]
    fn rotated_answers_hold_every_record_once(
        addrs in prop::collection::hash_set(any::<[u8; 4]>(), 2..20),
        rotation in any::<u32>(),
    ) {
        let qname = "web.default.svc.cluster.local";
        let mut builder = AnswerBuilder::new(&nb(qname));
        for addr in &addrs {
            builder.push(Owner::Question, 5, Rdata::A(Ipv4Addr::from(*addr))).unwrap();
        }
        builder.rotate_answers();
        let answer = builder.finish().unwrap();
        let query = query_bytes(qname, 1, 1, Some(1232));
        let parsed = parse_query(&query).unwrap();
        let mut out = vec![0u8; 4096];
        let len = assemble_reply(&parsed, answer.as_ref(), rotation, Transport::Udp, false, &mut out).unwrap();
        let message = Message::from_vec(&out[..len]).unwrap();
        let mut got: Vec<[u8; 4]> = message.answers.iter().map(|r| match &r.data {
            RData::A(a) => a.0.octets(),
            other => panic!("unexpected {other:?}"),
        }).collect();
        let first = got[0];
        let order: Vec<[u8; 4]> = addrs.iter().copied().collect();
        let mut want = order.clone();
        want.sort();
        got.sort();
        prop_assert_eq!(got, want);
        // The first record is the rotation-th of the built order.
        prop_assert_eq!(first, order[rotation as usize % order.len()]);
    }
}

/// The flat form has a short header (9 bytes) for what nearly every answer
/// is, and a long one (19) for the rest: more than 255 records, an
/// extended RCODE, a long tail. Both read back whole, and neither reads
/// from a cut copy.
#[test]
fn flat_forms_short_and_long_read_back() {
    let name = nb("big.default.svc.cluster.local");
    let with_records = |count: u32| {
        let mut builder = AnswerBuilder::new(&name);
        for i in 0..count {
            let rdata = Rdata::A(Ipv4Addr::from(0x0a00_0000 + i));
            builder.push(Owner::Question, 5, rdata).unwrap();
        }
        builder.finish().unwrap()
    };
    let small = with_records(3);
    let many = with_records(300);
    let extended = PreparedAnswer::empty(Rcode(16), true);
    let plain = PreparedAnswer::empty(Rcode::SERVFAIL, false);
    for (answer, header_len) in [(&small, 9), (&plain, 9), (&many, 19), (&extended, 19)] {
        let mut flat = Vec::new();
        answer.encode_into(&mut flat);
        assert_eq!(flat.len(), answer.encoded_len());
        assert_eq!(flat.len() - answer.heap_bytes(), header_len, "{answer:?}");
        flat.push(0xEE);
        let (decoded, rest) = AnswerRef::decode(&flat).unwrap();
        assert_eq!(&decoded.to_owned(), answer);
        assert_eq!(rest, [0xEE]);
        for cut in 0..answer.encoded_len() {
            assert!(AnswerRef::decode(&flat[..cut]).is_none(), "cut at {cut}");
        }
    }
    assert_eq!(many.counts()[0], 300);
}
