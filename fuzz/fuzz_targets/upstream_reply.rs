//! Any bytes as an upstream's reply to a fixed forwarded query. The check
//! must never panic; a reply it accepts must rebuild into a client reply
//! with the client's ID and question, within the client's size limit, over
//! UDP and TCP.
#![no_main]

use kubewire_wire::{
    MAX_UPSTREAM_QUERY, Transport, check_upstream_reply, parse_query, sent_question,
    write_forwarded_reply, write_upstream_query,
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
});
