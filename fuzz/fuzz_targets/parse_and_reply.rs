//! Parse any bytes as a query, then assemble a positive, a zone-wide negative
//! and an error reply from it. Nothing may panic, and every reply must parse
//! again as a query-shaped message of the right size. A zone-wide answer
//! for a question outside `cluster.local` must be refused, not assembled.
#![no_main]

use kubewire_wire::{
    AnswerBuilder, NameBuf, Owner, Rcode, Rdata, ReplyError, Section, Transport, assemble_reply,
    error_reply, parse_query,
};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn answers() -> &'static [kubewire_wire::PreparedAnswer; 2] {
    static ANSWERS: OnceLock<[kubewire_wire::PreparedAnswer; 2]> = OnceLock::new();
    ANSWERS.get_or_init(|| {
        let zone = NameBuf::from_text("cluster.local").unwrap();
        let mut positive = AnswerBuilder::for_zone(&zone);
        for i in 0..4 {
            positive
                .push(Owner::Question, 5, Rdata::A([10, 0, 0, i].into()))
                .unwrap();
        }
        positive.rotate_answers();
        let mut negative = AnswerBuilder::for_zone(&zone);
        negative.set_rcode(Rcode::NXDOMAIN);
        negative.section(Section::Authority).unwrap();
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
        negative.push(Owner::Name(&zone), 5, soa).unwrap();
        [positive.finish().unwrap(), negative.finish().unwrap()]
    })
}

fuzz_target!(|data: &[u8]| {
    let mut out = vec![0u8; 65535];
    let zone = NameBuf::from_text("cluster.local").unwrap();
    match parse_query(data) {
        Ok(query) => {
            let in_zone = query.key().ends_with(&zone);
            for answer in answers() {
                for transport in [Transport::Udp, Transport::Tcp] {
                    let assembled = assemble_reply(
                        &query,
                        answer.as_ref(),
                        data.len() as u32,
                        transport,
                        true,
                        &mut out,
                    );
                    let len = match assembled {
                        Ok(len) => len,
                        Err(ReplyError::QuestionOutsideZone) if !in_zone => continue,
                        Err(error) => panic!("{error}"),
                    };
                    assert!(len >= 12 + query.question_bytes().len());
                    assert_eq!(
                        &out[12..12 + query.question_bytes().len()],
                        query.question_bytes()
                    );
                    if transport == Transport::Udp {
                        let limit = query
                            .edns()
                            .map_or(512, |e| usize::from(e.udp_payload_size.min(1232)));
                        assert!(len <= limit.max(12 + query.question_bytes().len() + 11));
                    }
                }
            }
        }
        Err(error) => {
            let _ = error_reply(data, error, true, &mut out).unwrap();
        }
    }
});
