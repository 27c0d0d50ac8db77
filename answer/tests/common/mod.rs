//! Shared fixture and query helpers for the answer crate's tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use hickory_proto::op::Message;
use hickory_proto::rr::Record;
use kubewire_answer::{AnswerTable, Compiler, Object, ObjectChange, Response, Settings, Update};
use kubewire_wire::{NameBuf, Transport};
use std::sync::Arc;

/// The cluster zone's SOA as the authority of a negative answer.
pub const SOA: &str = "cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local.";

mod fixture;
mod wellformed;
pub use fixture::*;
#[allow(unused_imports)] // used by the well-formedness walk only
pub use wellformed::check_reply;

/// Compiles objects from scratch into a compiler.
pub fn compile(settings: Settings, objects: Vec<Object>, synced: bool) -> Compiler {
    let mut compiler = Compiler::new(settings);
    for object in objects {
        compiler.apply(ObjectChange::Upsert(object));
    }
    if synced {
        compiler.mark_synced();
    }
    compiler.take_delta();
    compiler
}

pub fn table_from(compiler: &Compiler) -> AnswerTable {
    let mut table = AnswerTable::new();
    assert!(table.apply(&Update::Reset(Arc::new(compiler.snapshot()))));
    table
}

/// A tester over `objects`, compiled from scratch and synced.
pub fn tester(settings: Settings, objects: Vec<Object>) -> Tester {
    Tester {
        table: table_from(&compile(settings, objects, true)),
    }
}

pub fn fixture(settings: Settings) -> Tester {
    tester(settings, fixture_objects())
}

pub fn fixture_unsynced(settings: Settings) -> Tester {
    Tester {
        table: table_from(&compile(settings, fixture_objects(), false)),
    }
}

pub fn qtype_number(name: &str) -> u16 {
    kubewire_wire::rtype::from_name(name).unwrap_or_else(|| panic!("unknown type {name}"))
}

pub fn query(name: &str, qtype: u16, id: u16) -> Vec<u8> {
    let mut packet = id.to_be_bytes().to_vec();
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    packet.extend_from_slice(NameBuf::from_text(name).unwrap().as_wire());
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&[0, 1]);
    // EDNS with a large payload size, so big answers are not truncated.
    packet.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    packet
}

pub fn record_text(record: &Record) -> String {
    format!(
        "{} {} {} {}",
        record.name,
        record.ttl,
        record.record_type(),
        record.data
    )
}

pub fn rcode_name(message: &Message) -> String {
    kubewire_wire::Rcode(u16::from(message.metadata.response_code)).to_string()
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Rcode(String),
    NotOurs,
    Drop,
}

pub struct Tester {
    pub table: AnswerTable,
}

impl Tester {
    pub fn ask(&mut self, name: &str, qtype: &str) -> (Response, Option<Message>) {
        let packet = query(name, qtype_number(qtype), 0x4242);
        let mut out = vec![0u8; 65535];
        let response = self.table.respond(&packet, Transport::Tcp, &mut out);
        let message = match response {
            Response::Reply { len, .. } | Response::NotOurs { len, .. } => {
                Some(Message::from_vec(&out[..len]).unwrap())
            }
            Response::Drop => None,
        };
        (response, message)
    }

    pub fn outcome(&mut self, name: &str, qtype: &str) -> Outcome {
        match self.ask(name, qtype) {
            (Response::NotOurs { .. }, _) => Outcome::NotOurs,
            (Response::Drop, _) => Outcome::Drop,
            (Response::Reply { .. }, Some(m)) => Outcome::Rcode(rcode_name(&m)),
            (Response::Reply { .. }, None) => unreachable!(),
        }
    }

    /// Asks and compares every section. Expected records are
    /// `owner ttl TYPE rdata`; an authority entry may be a prefix (the SOA's
    /// serial changes).
    pub fn check(
        &mut self,
        name: &str,
        qtype: &str,
        rcode: &str,
        answer: &[&str],
        authority: &[&str],
        additional: &[&str],
    ) {
        let (response, message) = self.ask(name, qtype);
        let message = message.unwrap_or_else(|| panic!("{name} {qtype}: no reply ({response:?})"));
        let context = format!("{name} {qtype}");
        assert_eq!(rcode_name(&message), rcode, "{context}: rcode");
        assert_eq!(message.metadata.id, 0x4242, "{context}: id");
        assert_eq!(message.queries.len(), 1, "{context}: question");
        let sorted = |records: &[Record]| {
            let mut list: Vec<String> = records.iter().map(record_text).collect();
            list.sort();
            list
        };
        let mut want_answer: Vec<String> = answer.iter().map(|s| s.to_string()).collect();
        want_answer.sort();
        let got_answer = sorted(&message.answers);
        if answer.iter().any(|a| a.contains(" SOA")) {
            assert_eq!(
                got_answer.len(),
                answer.len(),
                "{context}: answer {got_answer:?}"
            );
            for (got, want) in got_answer.iter().zip(&want_answer) {
                assert!(
                    got.starts_with(want.as_str()),
                    "{context}: answer {got} vs {want}"
                );
            }
        } else {
            assert_eq!(got_answer, want_answer, "{context}: answer");
        }
        let got_authority = sorted(&message.authorities);
        assert_eq!(
            got_authority.len(),
            authority.len(),
            "{context}: authority {got_authority:?}"
        );
        let mut want_authority: Vec<&str> = authority.to_vec();
        want_authority.sort();
        for (got, want) in got_authority.iter().zip(&want_authority) {
            assert!(
                got.starts_with(want),
                "{context}: authority {got} vs {want}"
            );
        }
        let mut want_additional: Vec<String> = additional.iter().map(|s| s.to_string()).collect();
        want_additional.sort();
        assert_eq!(
            sorted(&message.additionals),
            want_additional,
            "{context}: additional"
        );
    }
}
