//! `AnswerTable::respond`, the real serving function, allocates nothing:
//! every name of the fixture, every type, NXDOMAIN, pod names and reverse
//! names, in every pod mode, under a counting global allocator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kubewire_answer::{PodMode, Response, Settings};
use kubewire_wire::{Transport, rtype};

#[path = "../../wire/tests/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;

#[test]
fn respond_allocates_nothing_in_any_pod_mode() {
    for pod_mode in [PodMode::Disabled, PodMode::Insecure, PodMode::Verified] {
        let settings = Settings {
            pod_mode,
            ..Settings::default()
        };
        let mut table = table_from(&compile(settings, fixture_objects(), true));
        let mut names: Vec<String> = table
            .entries()
            .map(|entry| {
                table
                    .zones()
                    .name_of(entry.table_key())
                    .unwrap()
                    .to_string()
            })
            .collect();
        names.extend(
            [
                "nope.testns.svc.cluster.local.",
                "cluster.local.",
                "10-240-0-1.podns.pod.cluster.local.",
                "10-240-0-9.podns.pod.cluster.local.",
                "1-2-3-4.nons.pod.cluster.local.",
                "1.0.0.10.in-addr.arpa.",
                "9.9.9.9.in-addr.arpa.",
                "www.example.com.",
            ]
            .map(String::from),
        );
        let types = [
            rtype::A,
            rtype::AAAA,
            rtype::SRV,
            rtype::PTR,
            rtype::CNAME,
            rtype::TXT,
            rtype::SOA,
            rtype::NS,
            rtype::ANY,
            rtype::AXFR,
        ];
        let queries: Vec<Vec<u8>> = names
            .iter()
            .flat_map(|name| types.map(|qtype| query(name.trim_end_matches('.'), qtype, 7)))
            .collect();
        let mut out = vec![0u8; 65535];
        // Once to warm whatever is lazily set up, then counted.
        for packet in &queries {
            table.respond(packet, Transport::Udp, &mut out);
        }
        let before = allocations();
        let mut replies = 0usize;
        for packet in &queries {
            for transport in [Transport::Udp, Transport::Tcp] {
                match table.respond(packet, transport, &mut out) {
                    Response::Reply { len, .. } | Response::NotOurs { len, .. } => replies += len,
                    Response::Drop => {}
                }
            }
        }
        assert_eq!(
            allocations() - before,
            0,
            "{pod_mode:?}: respond allocated over {} queries",
            queries.len() * 2
        );
        assert!(replies > 0);
    }
}
