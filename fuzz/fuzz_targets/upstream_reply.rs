//! Any bytes as an upstream's reply to a fixed forwarded query. The check
//! must never panic; a reply it accepts must rebuild into a client reply
//! with the client's ID and question, within the client's size limit, over
//! UDP and TCP; and a reply the cache takes must serve a hit, at any age,
//! with the client's ID and question, within the limit, whose records parse
//! back.
#![no_main]

use kubewire_wire::{
    CachedAnswer, MAX_UPSTREAM_QUERY, Transport, TtlPolicy, TtlView, check_upstream_reply,
    parse_query, sent_question, write_forwarded_reply, write_upstream_query,
};
use libfuzzer_sys::fuzz_target;

/// `wWw.Example.COM A`, RD, with an OPT of payload 1232.
const CLIENT: &[u8] = b"\xAB\xCD\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\
    \x03wWw\x07Example\x03COM\x00\x00\x01\x00\x01\
    \x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00";

fuzz_target!(|data: &[u8]| {
    let query = parse_query(CLIENT).unwrap();
    // The ID the reply is checked against: its own first two bytes, so the
    // fuzzer reaches past the ID check.
    let id = match data {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    };
    let mut sent = [0u8; MAX_UPSTREAM_QUERY];
    let sent_len = write_upstream_query(&query, id, &mut sent).unwrap();
    let question = sent_question(&sent[..sent_len]);
    let Ok(checked) = check_upstream_reply(data, id, question) else {
        return;
    };
    let mut out = vec![0u8; 65535];
    for (transport, limit) in [(Transport::Udp, 1232usize), (Transport::Tcp, 65535)] {
        let len = write_forwarded_reply(&query, &checked, transport, &mut out).unwrap();
        assert!(len <= limit);
        assert_eq!(&out[..2], &CLIENT[..2]);
        assert_eq!(
            &out[12..12 + query.question_bytes().len()],
            query.question_bytes()
        );
        assert!(out[2] & 0x80 != 0, "QR");
    }
    let Ok(entry) = CachedAnswer::from_upstream(&checked, question, &TtlPolicy::default(), |_| false)
    else {
        return;
    };
    for (transport, limit) in [(Transport::Udp, 1232usize), (Transport::Tcp, 65535)] {
        for view in [TtlView::Aged(0), TtlView::Aged(7), TtlView::Fixed(30)] {
            let len = entry.write_reply(&query, view, transport, &mut out).unwrap();
            assert!(len <= limit);
            assert_eq!(&out[..2], &CLIENT[..2]);
            assert_eq!(
                &out[12..12 + query.question_bytes().len()],
                query.question_bytes()
            );
            // What we serve is itself a sound message: every name and
            // record well formed, pointers backwards.
            let served_id = u16::from_be_bytes([out[0], out[1]]);
            let mut served = out[..len].to_vec();
            // Read as a reply to the question the client sent.
            served[2] |= 0x80;
            let client_question = query.question_bytes();
            check_upstream_reply(&served, served_id, client_question).unwrap();
        }
    }
});
