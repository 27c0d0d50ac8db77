//! Random bytes never panic the parser or the reply writers, and every reply
//! that is written parses with the reference parser.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use kubewire_wire::{
    AnswerBuilder, NameBuf, Owner, Rdata, Transport, assemble_reply, error_reply, parse_query,
};
use proptest::prelude::*;

fn answer() -> kubewire_wire::PreparedAnswer {
    let mut b = AnswerBuilder::for_zone(&NameBuf::from_text("cluster.local").unwrap());
    b.push(Owner::Question, 5, Rdata::A([10, 0, 0, 1].into()))
        .unwrap();
    b.finish().unwrap()
}

fn run(packet: &[u8]) {
    let mut out = vec![0u8; 65535];
    let answer = answer();
    match parse_query(packet) {
        Ok(query) => {
            for transport in [Transport::Udp, Transport::Tcp] {
                let len =
                    assemble_reply(&query, answer.as_ref(), 3, transport, true, &mut out).unwrap();
                hickory_proto::op::Message::from_vec(&out[..len]).unwrap();
            }
        }
        Err(error) => {
            if let Some(len) = error_reply(packet, error, true, &mut out).unwrap() {
                hickory_proto::op::Message::from_vec(&out[..len]).unwrap();
            }
        }
    }
}

/// A plausible header and question, then random mutations, so that the
/// fuzzing reaches past the first checks.
fn near_valid() -> impl Strategy<Value = Vec<u8>> {
    let base: Vec<u8> = {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        p.extend_from_slice(NameBuf::from_text("a.b.cluster.local").unwrap().as_wire());
        p.extend_from_slice(&[0, 1, 0, 1, 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        p
    };
    (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        0..64usize,
    )
        .prop_map(move |(edits, cut)| {
            let mut p = base.clone();
            for (at, byte) in edits {
                let i = at.index(p.len());
                p[i] = byte;
            }
            p.truncate(p.len().saturating_sub(cut % 8));
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn random_bytes_never_panic(packet in prop::collection::vec(any::<u8>(), 0..600)) {
        run(&packet);
    }

    #[test]
    fn mutated_queries_never_panic(packet in near_valid()) {
        run(&packet);
    }
}
