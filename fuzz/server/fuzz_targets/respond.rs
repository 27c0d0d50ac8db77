//! `AnswerTable::respond`, the function that serves, over a table compiled
//! from the fixture with every kind of record, in every pod mode. Any bytes
//! as a query: nothing may panic, and every reply must parse with
//! hickory-proto and carry the query's question byte for byte.
#![no_main]

#[path = "../../../control-plane/tests/common/fixture.rs"]
mod fixture;

use kubewire_control_plane::{
    AnswerTable, Compiler, ObjectChange, PodMode, Response, Settings, Update,
};
use kubewire_wire::{Transport, parse_query};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::sync::Arc;

fn table(pod_mode: PodMode) -> AnswerTable {
    let mut compiler = Compiler::new(Settings {
        pod_mode,
        ..Settings::default()
    });
    for object in fixture::fixture_objects() {
        compiler.apply(ObjectChange::Upsert(object));
    }
    compiler.mark_synced();
    compiler.take_delta();
    let mut table = AnswerTable::new();
    table.apply(&Update::Reset(Arc::new(compiler.snapshot())));
    table
}

thread_local! {
    static TABLES: RefCell<Vec<AnswerTable>> = RefCell::new(
        [PodMode::Disabled, PodMode::Insecure, PodMode::Verified].map(table).into(),
    );
}

fuzz_target!(|data: &[u8]| {
    let mut out = vec![0u8; 65535];
    TABLES.with(|tables| {
        for table in tables.borrow_mut().iter_mut() {
            for transport in [Transport::Udp, Transport::Tcp] {
                let len = match table.respond(data, transport, &mut out) {
                    Response::Reply { len, .. } | Response::NotOurs { len, .. } => len,
                    Response::Drop => continue,
                };
                let reply = &out[..len];
                if transport == Transport::Udp {
                    assert!(len <= 1232, "UDP reply of {len} bytes");
                }
                let message = hickory_proto::op::Message::from_vec(reply)
                    .unwrap_or_else(|e| panic!("reply does not parse: {e}"));
                assert!(message.metadata.message_type == hickory_proto::op::MessageType::Response);
                if let Ok(query) = parse_query(data) {
                    let question = query.question_bytes();
                    assert_eq!(
                        &reply[12..12 + question.len()],
                        question,
                        "the question echoed"
                    );
                    assert_eq!(&reply[..2], &data[..2], "the ID kept");
                }
            }
        }
    });
});
