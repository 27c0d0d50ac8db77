//! Parse plus assemble allocates nothing: a counting global allocator.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use kubewire_wire::{
    AnswerBuilder, NameBuf, Owner, Rcode, Rdata, Section, Transport, assemble_reply, error_reply,
    parse_query,
};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;

#[test]
fn parse_and_assemble_do_not_allocate() {
    let name = NameBuf::from_text("web.default.svc.cluster.local").unwrap();
    let mut b = AnswerBuilder::new(&name);
    for i in 1..=4 {
        b.push(Owner::Question, 5, Rdata::A([10, 0, 0, i].into()))
            .unwrap();
    }
    b.rotate_answers();
    let positive = b.finish().unwrap();
    let zone = NameBuf::from_text("cluster.local").unwrap();
    let mut b = AnswerBuilder::for_zone(&zone);
    b.set_rcode(Rcode::NXDOMAIN);
    b.section(Section::Authority).unwrap();
    let (mname, rname) = (
        zone.prepend_label(b"ns").unwrap(),
        zone.prepend_label(b"hostmaster").unwrap(),
    );
    let soa = Rdata::Soa {
        mname: &mname,
        rname: &rname,
        serial: 1,
        refresh: 2,
        retry: 3,
        expire: 4,
        minimum: 5,
    };
    b.push(Owner::Name(&zone), 5, soa).unwrap();
    let negative = b.finish().unwrap();

    let mut query = vec![0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    query.extend_from_slice(b"\x03WEB\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01");
    query.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
    let bad = [0u8, 1, 0x11, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
    let mut out = [0u8; 4096];

    let before = allocations();
    let mut total = 0usize;
    for rotation in 0..1000u32 {
        let parsed = parse_query(&query).unwrap();
        total += assemble_reply(
            &parsed,
            positive.as_ref(),
            rotation,
            Transport::Udp,
            true,
            &mut out,
        )
        .unwrap();
        total += assemble_reply(
            &parsed,
            negative.as_ref(),
            rotation,
            Transport::Tcp,
            true,
            &mut out,
        )
        .unwrap();
        let error = parse_query(&bad).unwrap_err();
        total += error_reply(&bad, error, true, &mut out)
            .unwrap()
            .unwrap_or(0);
    }
    let after = allocations();
    assert!(total > 0);
    assert_eq!(after - before, 0, "the query path allocated");
}
