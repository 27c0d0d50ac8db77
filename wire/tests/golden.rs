//! Golden bytes: every record type and every bad-input outcome, written out
//! by hand from RFC 1035/2782/6891 layouts, not derived from the encoder.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use kubewire_wire::{
    AnswerBuilder, NameBuf, Owner, QueryError, Rcode, Rdata, Section, Transport, assemble_reply,
    error_reply, parse_query,
};

/// Hex with free white space and `#` comments to end of line.
fn hex(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| line.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd hex: {digits}");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

fn name(text: &str) -> NameBuf {
    NameBuf::from_text(text).unwrap()
}

/// `a.NS.svc.cluster.local`, 24 bytes: labels at 12 (a), 14 (NS), 17 (svc),
/// 21 (cluster), 29 (local), root at 35.
const QNAME: &str = "01 61  02 4e 53  03 73 76 63  07 63 6c 75 73 74 65 72  05 6c 6f 63 61 6c  00";
const QNAME_LOWER: &str = "a.ns.svc.cluster.local";

fn query(qtype: &str) -> Vec<u8> {
    hex(&format!(
        "be ef 01 00 00 01 00 00 00 00 00 00 {QNAME} {qtype} 00 01"
    ))
}

fn reply_for(query_bytes: &[u8], answer: &kubewire_wire::PreparedAnswer) -> Vec<u8> {
    let query = parse_query(query_bytes).unwrap();
    let mut out = [0u8; 4096];
    let len = assemble_reply(&query, answer.as_ref(), 0, Transport::Udp, true, &mut out).unwrap();
    out[..len].to_vec()
}

/// Header of a NOERROR, AA, RD, RA reply with the given counts.
fn header(an: u16, ns: u16, ar: u16) -> String {
    format!("be ef 85 80 00 01 {an:04x} {ns:04x} {ar:04x}")
}

#[test]
fn a_record() {
    let mut b = AnswerBuilder::new(&name(QNAME_LOWER));
    b.push(Owner::Question, 5, Rdata::A([10, 96, 0, 7].into()))
        .unwrap();
    let got = reply_for(&query("00 01"), &b.finish().unwrap());
    let want = hex(&format!(
        "{} {QNAME} 0001 0001
         c0 0c 0001 0001 00000005 0004 0a 60 00 07",
        header(1, 0, 0)
    ));
    assert_eq!(got, want);
}

#[test]
fn aaaa_record() {
    let mut b = AnswerBuilder::new(&name(QNAME_LOWER));
    b.push(Owner::Question, 30, Rdata::Aaaa("fd00::7".parse().unwrap()))
        .unwrap();
    let got = reply_for(&query("00 1c"), &b.finish().unwrap());
    let want = hex(&format!(
        "{} {QNAME} 001c 0001
         c0 0c 001c 0001 0000001e 0010 fd00 0000 0000 0000 0000 0000 0000 0007",
        header(1, 0, 0)
    ));
    assert_eq!(got, want);
}

#[test]
fn cname_record() {
    let mut b = AnswerBuilder::new(&name(QNAME_LOWER));
    b.push(Owner::Question, 5, Rdata::Cname(&name("example.com")))
        .unwrap();
    let got = reply_for(&query("00 05"), &b.finish().unwrap());
    let want = hex(&format!(
        "{} {QNAME} 0005 0001
         c0 0c 0005 0001 00000005 000d 07 65 78 61 6d 70 6c 65 03 63 6f 6d 00",
        header(1, 0, 0)
    ));
    assert_eq!(got, want);
}

#[test]
fn ptr_records_compress_against_earlier_tail_names() {
    // 7.0.96.10.in-addr.arpa: 1+1 +1+1 +1+2 +1+2 +1+7 +1+4 +1 = 24 bytes; tail at 40.
    let qname = "01 37 01 30 02 39 36 02 31 30 07 69 6e 2d 61 64 64 72 04 61 72 70 61 00";
    let query_bytes = hex(&format!(
        "be ef 01 00 00 01 00 00 00 00 00 00 {qname} 000c 0001"
    ));
    let mut b = AnswerBuilder::new(&name("7.0.96.10.in-addr.arpa"));
    b.push(
        Owner::Question,
        5,
        Rdata::Ptr(&name("a.ns.svc.cluster.local")),
    )
    .unwrap();
    b.push(
        Owner::Question,
        5,
        Rdata::Ptr(&name("b.ns.svc.cluster.local")),
    )
    .unwrap();
    let got = reply_for(&query_bytes, &b.finish().unwrap());
    // First PTR: rdata at 40+12 = 52, literal; "ns.svc.cluster.local" at 54 (0x36).
    // Second PTR: "b" then pointer c0 36.
    let want = hex(&format!(
        "{} {qname} 000c 0001
         c0 0c 000c 0001 00000005 0018 {QNAME_L}
         c0 0c 000c 0001 00000005 0004 01 62 c0 36",
        header(2, 0, 0),
        QNAME_L = "01 61 02 6e 73 03 73 76 63 07 63 6c 75 73 74 65 72 05 6c 6f 63 61 6c 00"
    ));
    assert_eq!(got, want);
}

/// An SRV answer for `question` (port 80) targeting `target`, whose
/// address 10.244.1.7 is the glue.
fn srv_with_glue(question: &str, target: &str) -> kubewire_wire::PreparedAnswer {
    let mut b = AnswerBuilder::new(&name(question));
    let target = name(target);
    b.push(
        Owner::Question,
        5,
        Rdata::Srv {
            priority: 0,
            weight: 100,
            port: 80,
            target: &target,
        },
    )
    .unwrap();
    b.section(Section::Additional).unwrap();
    b.push(Owner::Name(&target), 5, Rdata::A([10, 244, 1, 7].into()))
        .unwrap();
    b.finish().unwrap()
}

#[test]
fn srv_target_is_literal_and_additional_owner_points_at_it() {
    let answer = srv_with_glue(QNAME_LOWER, "ep.a.ns.svc.cluster.local");
    let got = reply_for(&query("00 21"), &answer);
    // SRV rdata at 40+12 = 52; the target after 6 bytes, at 58 (0x3a), uncompressed.
    let want = hex(&format!(
        "{} {QNAME} 0021 0001
         c0 0c 0021 0001 00000005 0021 0000 0064 0050
             02 65 70 01 61 02 6e 73 03 73 76 63 07 63 6c 75 73 74 65 72 05 6c 6f 63 61 6c 00
         c0 3a 0001 0001 00000005 0004 0a f4 01 07",
        header(1, 0, 1)
    ));
    assert_eq!(got, want);
}

#[test]
fn txt_record() {
    // dns-version.cluster.local: 1+11 +1+7 +1+5 +1 = 27 bytes.
    let qname = "0b 64 6e 73 2d 76 65 72 73 69 6f 6e 07 63 6c 75 73 74 65 72 05 6c 6f 63 61 6c 00";
    let query_bytes = hex(&format!(
        "be ef 01 00 00 01 00 00 00 00 00 00 {qname} 0010 0001"
    ));
    let mut b = AnswerBuilder::new(&name("dns-version.cluster.local"));
    b.push(Owner::Question, 5, Rdata::Txt(&[b"1.1.0"])).unwrap();
    let got = reply_for(&query_bytes, &b.finish().unwrap());
    let want = hex(&format!(
        "{} {qname} 0010 0001  c0 0c 0010 0001 00000005 0006 05 31 2e 31 2e 30",
        header(1, 0, 0)
    ));
    assert_eq!(got, want);
}

/// `cluster.local`: 15 bytes at 12.
const APEX: &str = "07 63 6c 75 73 74 65 72 05 6c 6f 63 61 6c 00";

fn soa<'a>(mname: &'a NameBuf, rname: &'a NameBuf) -> Rdata<'a> {
    Rdata::Soa {
        mname,
        rname,
        serial: 42,
        refresh: 7200,
        retry: 1800,
        expire: 86400,
        minimum: 5,
    }
}

const SOA_NUMBERS: &str = "0000002a 00001c20 00000708 00015180 00000005";

#[test]
fn soa_and_ns_at_the_apex() {
    let (mname, rname) = (
        name("ns.dns.cluster.local"),
        name("hostmaster.cluster.local"),
    );
    let query_bytes = hex(&format!(
        "be ef 01 00 00 01 00 00 00 00 00 00 {APEX} 0006 0001"
    ));
    let mut b = AnswerBuilder::new(&name("cluster.local"));
    b.push(Owner::Question, 5, soa(&mname, &rname)).unwrap();
    let got = reply_for(&query_bytes, &b.finish().unwrap());
    // rdata: ns.dns + c00c (9 bytes), hostmaster + c00c (13 bytes), 20 bytes of numbers.
    let want = hex(&format!(
        "{} {APEX} 0006 0001
         c0 0c 0006 0001 00000005 002a 02 6e 73 03 64 6e 73 c0 0c
             0a 68 6f 73 74 6d 61 73 74 65 72 c0 0c {SOA_NUMBERS}",
        header(1, 0, 0)
    ));
    assert_eq!(got, want);

    let query_bytes = hex(&format!(
        "be ef 01 00 00 01 00 00 00 00 00 00 {APEX} 0002 0001"
    ));
    let mut b = AnswerBuilder::new(&name("cluster.local"));
    b.push(Owner::Question, 5, Rdata::Ns(&mname)).unwrap();
    let got = reply_for(&query_bytes, &b.finish().unwrap());
    let want = hex(&format!(
        "{} {APEX} 0002 0001  c0 0c 0002 0001 00000005 0009 02 6e 73 03 64 6e 73 c0 0c",
        header(1, 0, 0)
    ));
    assert_eq!(got, want);
}

#[test]
fn zone_wide_nxdomain_points_into_each_question() {
    let (zone, mname, rname) = (
        name("cluster.local"),
        name("ns.dns.cluster.local"),
        name("hostmaster.cluster.local"),
    );
    let mut b = AnswerBuilder::for_zone(&zone);
    b.set_rcode(Rcode::NXDOMAIN);
    b.section(Section::Authority).unwrap();
    b.push(Owner::Name(&zone), 5, soa(&mname, &rname)).unwrap();
    let answer = b.finish().unwrap();

    // For a.NS.svc.cluster.local the zone suffix is at 12 + 24 - 15 = 21 (0x15).
    let got = reply_for(&query("00 01"), &answer);
    let want = hex(&format!(
        "be ef 85 83 0001 0000 0001 0000 {QNAME} 0001 0001
         c0 15 0006 0001 00000005 002a 02 6e 73 03 64 6e 73 c0 15
             0a 68 6f 73 74 6d 61 73 74 65 72 c0 15 {SOA_NUMBERS}"
    ));
    assert_eq!(got, want);

    // The same prepared answer for a shorter question: x.cluster.local, zone at 14.
    let qname = "01 78 07 63 6c 75 73 74 65 72 05 6c 6f 63 61 6c 00";
    let query_bytes = hex(&format!(
        "be ef 01 00 00 01 00 00 00 00 00 00 {qname} 0001 0001"
    ));
    let got = reply_for(&query_bytes, &answer);
    let want = hex(&format!(
        "be ef 85 83 0001 0000 0001 0000 {qname} 0001 0001
         c0 0e 0006 0001 00000005 002a 02 6e 73 03 64 6e 73 c0 0e
             0a 68 6f 73 74 6d 61 73 74 65 72 c0 0e {SOA_NUMBERS}"
    ));
    assert_eq!(got, want);
}

#[test]
fn edns_query_gets_opt_with_our_size_and_do_copied() {
    let mut b = AnswerBuilder::new(&name(QNAME_LOWER));
    b.push(Owner::Question, 5, Rdata::A([10, 96, 0, 7].into()))
        .unwrap();
    let answer = b.finish().unwrap();
    // AR=1; OPT: root, type 41, size 4096, ext-rcode 0, version 0, DO set, one
    // unknown option (code 65001, 2 bytes) which is skipped.
    let query_bytes = hex(&format!(
        "be ef 01 00 0001 0000 0000 0001 {QNAME} 0001 0001
         00 0029 1000 00 00 8000 0006 fde9 0002 ab cd"
    ));
    let got = reply_for(&query_bytes, &answer);
    let want = hex(&format!(
        "be ef 85 80 0001 0001 0000 0001 {QNAME} 0001 0001
         c0 0c 0001 0001 00000005 0004 0a 60 00 07
         00 0029 04d0 00 00 8000 0000"
    ));
    assert_eq!(got, want);
}

#[test]
fn oversized_udp_reply_is_truncated_whole() {
    let mut b = AnswerBuilder::new(&name(QNAME_LOWER));
    for i in 0..40u8 {
        b.push(Owner::Question, 5, Rdata::A([10, 0, 0, i].into()))
            .unwrap();
    }
    let answer = b.finish().unwrap();
    // 40 × 16 = 640 bytes of records: over 512 without EDNS.
    let got = reply_for(&query("00 01"), &answer);
    let want = hex(&format!(
        "be ef 87 80 0001 0000 0000 0000 {QNAME} 0001 0001"
    ));
    assert_eq!(got, want);
    // Over TCP it goes whole.
    let query_bytes = query("00 01");
    let parsed = parse_query(&query_bytes).unwrap();
    let mut out = vec![0u8; 65535];
    let len = assemble_reply(&parsed, answer.as_ref(), 0, Transport::Tcp, true, &mut out).unwrap();
    assert_eq!(len, 12 + 28 + 640);
    assert_eq!(&out[2..8], &hex("85 80 0001 0028"));
}

#[test]
fn rotation_sends_a_window_of_the_doubled_set() {
    let mut b = AnswerBuilder::new(&name(QNAME_LOWER));
    for i in 1..=3u8 {
        b.push(Owner::Question, 5, Rdata::A([10, 0, 0, i].into()))
            .unwrap();
    }
    b.rotate_answers();
    let answer = b.finish().unwrap();
    let query_bytes = query("00 01");
    let parsed = parse_query(&query_bytes).unwrap();
    let mut out = [0u8; 512];
    let mut firsts = Vec::new();
    for rotation in 0..4 {
        let len = assemble_reply(
            &parsed,
            answer.as_ref(),
            rotation,
            Transport::Udp,
            true,
            &mut out,
        )
        .unwrap();
        assert_eq!(len, 40 + 3 * 16);
        let addrs: Vec<u8> = (0..3).map(|i| out[40 + 16 * i + 15]).collect();
        firsts.push(addrs);
    }
    assert_eq!(
        firsts,
        vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2], vec![1, 2, 3]]
    );
}

#[test]
fn rotation_refuses_mixed_sets() {
    let mut b = AnswerBuilder::new(&name(QNAME_LOWER));
    b.push(Owner::Question, 5, Rdata::A([10, 0, 0, 1].into()))
        .unwrap();
    b.push(Owner::Question, 5, Rdata::Cname(&name("x.example")))
        .unwrap();
    b.rotate_answers();
    assert_eq!(
        b.finish().unwrap_err(),
        kubewire_wire::BuildError::NotRotatable
    );
}

/// Runs a bad query and returns the reply bytes, or `None` for no reply.
fn bad(query_hex: &str) -> (QueryError, Option<Vec<u8>>) {
    let packet = hex(query_hex);
    let error = parse_query(&packet).unwrap_err();
    let mut out = [0u8; 1024];
    let reply = error_reply(&packet, error, true, &mut out)
        .unwrap()
        .map(|len| out[..len].to_vec());
    (error, reply)
}

#[test]
fn short_and_response_packets_get_no_reply() {
    assert_eq!(
        bad("be ef 01 00 0001 0000 0000"),
        (QueryError::TooShort, None)
    );
    assert_eq!(
        bad(&format!(
            "be ef 81 00 0001 0000 0000 0000 {QNAME} 0001 0001"
        )),
        (QueryError::NotAQuery, None)
    );
}

#[test]
fn formerr_cases_reply_with_the_header_alone() {
    let formerr = hex("be ef 81 81 0000 0000 0000 0000");
    let cases = [
        (
            format!("be ef 01 00 0002 0000 0000 0000 {QNAME} 0001 0001"),
            QueryError::QuestionCount(2),
        ),
        (
            "be ef 01 00 0000 0000 0000 0000".to_string(),
            QueryError::QuestionCount(0),
        ),
        (
            "be ef 01 00 0001 0000 0000 0000 01 61 c0 0c 0001 0001".to_string(),
            QueryError::BadName(kubewire_wire::NameError::Pointer),
        ),
        (
            "be ef 01 00 0001 0000 0000 0000 41 61 00 0001 0001".to_string(),
            QueryError::BadName(kubewire_wire::NameError::LabelType),
        ),
        (
            format!(
                "be ef 01 00 0001 0000 0000 0000 40 {} 00 0001 0001",
                "61 ".repeat(64)
            ),
            QueryError::BadName(kubewire_wire::NameError::LabelType),
        ),
        (
            format!(
                "be ef 01 00 0001 0000 0000 0000 {} 00 0001 0001",
                format!("3f {}", "61 ".repeat(63)).repeat(5)
            ),
            QueryError::BadName(kubewire_wire::NameError::NameTooLong),
        ),
        (
            "be ef 01 00 0001 0000 0000 0000 01 61 00 00".to_string(),
            QueryError::ShortInput,
        ),
        (
            format!(
                "be ef 01 00 0001 0000 0000 0002 {QNAME} 0001 0001
                 00 0029 1000 0000 0000 0000  00 0029 1000 0000 0000 0000"
            ),
            QueryError::MultipleOpt,
        ),
        (
            format!(
                "be ef 01 00 0001 0000 0000 0001 {QNAME} 0001 0001 01 61 00 0029 1000 0000 0000 0000"
            ),
            QueryError::BadOpt,
        ),
        (
            format!(
                "be ef 01 00 0001 0000 0000 0001 {QNAME} 0001 0001 00 0029 1000 0000 0000 0003 00 01 00"
            ),
            QueryError::BadOpt,
        ),
    ];
    for (query_hex, expected) in cases {
        let (error, reply) = bad(&query_hex);
        assert_eq!(error, expected, "{query_hex}");
        assert_eq!(reply, Some(formerr.clone()), "{query_hex}");
    }
}

#[test]
fn label_over_63_is_formerr() {
    // A length byte of 64 has the 0x40 bit: it can only be an (unsupported)
    // extended label type, so a 64-byte label is refused as such.
    let (error, _) = bad(&format!(
        "be ef 01 00 0001 0000 0000 0000 40 {} 00 0001 0001",
        "61 ".repeat(64)
    ));
    assert_eq!(error.rcode(), Some(Rcode::FORMERR));
}

#[test]
fn notimp_refused_and_badvers_echo_the_question() {
    // Opcode 2 (STATUS): NOTIMP, opcode copied, question echoed.
    let (error, reply) = bad(&format!(
        "be ef 11 00 0001 0000 0000 0000 {QNAME} 0001 0001"
    ));
    assert_eq!(error, QueryError::Opcode(2));
    assert_eq!(
        reply,
        Some(hex(&format!(
            "be ef 91 84 0001 0000 0000 0000 {QNAME} 0001 0001"
        )))
    );

    // Class CH: REFUSED.
    let (error, reply) = bad(&format!(
        "be ef 01 00 0001 0000 0000 0000 {QNAME} 0010 0003"
    ));
    assert_eq!(error, QueryError::Class(3));
    assert_eq!(
        reply,
        Some(hex(&format!(
            "be ef 81 85 0001 0000 0000 0000 {QNAME} 0010 0003"
        )))
    );

    // EDNS version 1: BADVERS = 16, low bits 0 in the header, 1 in the OPT.
    let (error, reply) = bad(&format!(
        "be ef 01 00 0001 0000 0000 0001 {QNAME} 0001 0001 00 0029 1000 00 01 0000 0000"
    ));
    assert_eq!(error, QueryError::BadVersion(1));
    assert_eq!(
        reply,
        Some(hex(&format!(
            "be ef 81 80 0001 0000 0000 0001 {QNAME} 0001 0001 00 0029 04d0 01 00 0000 0000"
        )))
    );
}

#[test]
fn trailing_bytes_are_ignored_and_not_echoed() {
    let mut b = AnswerBuilder::new(&name(QNAME_LOWER));
    b.push(Owner::Question, 5, Rdata::A([10, 96, 0, 7].into()))
        .unwrap();
    let answer = b.finish().unwrap();
    let mut padded = query("00 01");
    padded.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(
        reply_for(&padded, &answer),
        reply_for(&query("00 01"), &answer)
    );
}

#[test]
fn query_view_reports_fields() {
    let packet = query("00 1c");
    let parsed = parse_query(&packet).unwrap();
    assert_eq!(parsed.id(), 0xbeef);
    assert!(parsed.recursion_desired());
    assert_eq!(parsed.qtype(), 28);
    assert_eq!(parsed.key().to_string(), "a.ns.svc.cluster.local.");
    assert_eq!(parsed.question_bytes(), &packet[12..]);
    assert_eq!(parsed.edns(), None);
}

/// A zone-wide answer given a question outside its zone is an error, not a
/// wrapped pointer (found by the fuzzer: a question shorter than the zone
/// made `12 + qname_len - suffix_len` underflow).
#[test]
fn zone_wide_answer_refuses_a_question_outside_its_zone() {
    use kubewire_wire::ReplyError;
    let zone = NameBuf::from_text("cluster.local").unwrap();
    let mut builder = AnswerBuilder::for_zone(&zone);
    builder.set_rcode(Rcode::NXDOMAIN);
    builder.section(Section::Authority).unwrap();
    let mname = zone.prepend_label(b"ns").unwrap();
    let soa = Rdata::Soa {
        mname: &mname,
        rname: &mname,
        serial: 1,
        refresh: 1,
        retry: 1,
        expire: 1,
        minimum: 1,
    };
    builder.push(Owner::Name(&zone), 5, soa).unwrap();
    let answer = builder.finish().unwrap();
    let mut out = [0u8; 1232];
    for outside in ["a.", "local.", "xcluster.local.", "abcdefghijklmnopqrstu."] {
        let packet = query_packet(outside, 1);
        let query = parse_query(&packet).unwrap();
        assert_eq!(
            assemble_reply(&query, answer.as_ref(), 0, Transport::Udp, true, &mut out),
            Err(ReplyError::QuestionOutsideZone),
            "{outside}"
        );
    }
    for inside in ["cluster.local.", "x.cluster.local.", "A.B.Cluster.Local."] {
        let packet = query_packet(inside, 1);
        let query = parse_query(&packet).unwrap();
        assert!(
            assemble_reply(&query, answer.as_ref(), 0, Transport::Udp, true, &mut out).is_ok(),
            "{inside}"
        );
    }
}

fn query_packet(name: &str, qtype: u16) -> Vec<u8> {
    let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&1u16.to_be_bytes());
    packet
}

/// A wildcard's answer (`*.ns.svc.cluster.local`, as `zonal`'s
/// `*.prefer._zone…`) serves names of any length in the `*`'s place: the
/// glue's owner must point at the SRV target wherever the question's length
/// puts it.
#[test]
fn a_wildcard_answer_points_at_its_srv_target_for_questions_of_any_length() {
    let answer = srv_with_glue("*.ns.svc.cluster.local", "ep.ns.svc.cluster.local");
    let target_bytes = "02 65 70 02 6e 73 03 73 76 63 07 63 6c 75 73 74 65 72 05 6c 6f 63 61 6c 00";
    // `zone-c.NS.svc.cluster.local`, 29 bytes: the tail starts at 12+29+4 =
    // 45, the SRV target 12+6 bytes into it, at 63 (0x3f).
    let long = "06 7a 6f 6e 65 2d 63  02 4e 53  03 73 76 63  07 63 6c 75 73 74 65 72  05 6c 6f 63 61 6c  00";
    let got = reply_for(
        &hex(&format!(
            "be ef 01 00 00 01 00 00 00 00 00 00 {long} 0021 0001"
        )),
        &answer,
    );
    let want = hex(&format!(
        "{} {long} 0021 0001
         c0 0c 0021 0001 00000005 001f 0000 0064 0050 {target_bytes}
         c0 3f 0001 0001 00000005 0004 0a f4 01 07",
        header(1, 0, 1)
    ));
    assert_eq!(got, want);
    // `a.NS.svc.cluster.local`, 24 bytes: the target at 40+18 = 58 (0x3a).
    let got = reply_for(&query("00 21"), &answer);
    let want = hex(&format!(
        "{} {QNAME} 0021 0001
         c0 0c 0021 0001 00000005 001f 0000 0064 0050 {target_bytes}
         c0 3a 0001 0001 00000005 0004 0a f4 01 07",
        header(1, 0, 1)
    ));
    assert_eq!(got, want);
}
