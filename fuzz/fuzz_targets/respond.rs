//! `AnswerTable::respond`, the function that serves, over a table compiled
//! with settings drawn from the input: its first two bytes turn on the
//! fixture's switches (`zonal`, `multicluster`, `k8s_external`, the pod
//! modes, …), one bit each, and the rest is the query. So the fuzzer reaches
//! every option's branches. Nothing may panic; every reply must parse with
//! hickory-proto, and a reply to a well-formed query must pass the same
//! byte-level check as the well-formedness test (`check_reply`).
//!
//! Every 1024 inputs it prints how many replies came from the option
//! branches (zonal fallbacks, clusterset and external zones), to show the
//! draw reaches them.
#![no_main]

#[path = "../../answer/tests/common/fixture.rs"]
mod fixture;
#[path = "../../answer/tests/common/wellformed.rs"]
mod wellformed;

use kubewire_answer::{AnswerTable, Compiler, ObjectChange, Response, Update};
use kubewire_wire::{Transport, parse_query};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn table(bits: u16) -> AnswerTable {
    let mut compiler = Compiler::new(fixture::settings_with(&fixture::switches_from_bits(bits)));
    for object in fixture::option_objects() {
        compiler.apply(ObjectChange::Upsert(object));
    }
    compiler.mark_synced();
    compiler.take_delta();
    let mut table = AnswerTable::new();
    table.apply(&Update::Reset(Arc::new(compiler.snapshot())));
    table
}

thread_local! {
    /// One table per switch set drawn, compiled on first use.
    static TABLES: RefCell<HashMap<u16, AnswerTable>> = RefCell::new(HashMap::new());
}

/// Replies from the option branches, and inputs run.
static RUNS: AtomicU64 = AtomicU64::new(0);
static ZONAL_FALLBACKS: AtomicU64 = AtomicU64::new(0);
static CLUSTERSET: AtomicU64 = AtomicU64::new(0);
static EXTERNAL: AtomicU64 = AtomicU64::new(0);

/// Counts a NOERROR reply with answers in an option's names.
fn count_branch(bits: u16, lower_question: &str, reply: &[u8]) {
    let answered = reply[3] & 0x0F == 0 && u16::from_be_bytes([reply[6], reply[7]]) > 0;
    if !answered {
        return;
    }
    let on = |switch: fixture::Switch| fixture::switches_from_bits(bits).contains(&switch);
    if on(fixture::Switch::Zonal) && lower_question.contains("._zone.") {
        ZONAL_FALLBACKS.fetch_add(1, Ordering::Relaxed);
    }
    if on(fixture::Switch::Multicluster) && lower_question.ends_with("clusterset.local.") {
        CLUSTERSET.fetch_add(1, Ordering::Relaxed);
    }
    if on(fixture::Switch::External) && lower_question.ends_with("example.com.") {
        EXTERNAL.fetch_add(1, Ordering::Relaxed);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((bits, query)) = data.split_first_chunk::<2>() else {
        return;
    };
    let bits = u16::from_be_bytes(*bits) & ((1 << fixture::SWITCHES.len()) - 1);
    let runs = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
    if runs % 1024 == 0 {
        eprintln!(
            "respond: {runs} inputs; answered from zonal names {}, clusterset {}, external zones {}",
            ZONAL_FALLBACKS.load(Ordering::Relaxed),
            CLUSTERSET.load(Ordering::Relaxed),
            EXTERNAL.load(Ordering::Relaxed),
        );
    }
    let mut out = vec![0u8; 65535];
    TABLES.with(|tables| {
        let mut tables = tables.borrow_mut();
        // At most 64 compiled tables held (of 1024 switch sets).
        if tables.len() >= 64 && !tables.contains_key(&bits) {
            tables.clear();
        }
        let table = tables.entry(bits).or_insert_with(|| table(bits));
        for transport in [Transport::Udp, Transport::Tcp] {
            let len = match table.respond(query, transport, &mut out) {
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
            if let Ok(parsed) = parse_query(query) {
                // A query with trailing bytes or extra records parses, but
                // is echoed as its question alone: check the question.
                let question = parsed.question_bytes();
                assert_eq!(&reply[12..12 + question.len()], question, "the question echoed");
                assert_eq!(&reply[..2], &query[..2], "the ID kept");
                if transport == Transport::Tcp {
                    let name = kubewire_wire::name::to_text(parsed.key().as_wire());
                    count_branch(bits, &name, reply);
                }
                if let Err(error) = wellformed::check_reply(query, reply) {
                    panic!("reply to a well-formed query is malformed: {error}");
                }
            }
        }
    });
});
