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

#[test]
fn a_cache_hit_does_not_allocate() {
    use kubewire_wire::{
        CachedAnswer, MAX_CACHE_KEY, TtlPolicy, TtlView, cache_key, check_upstream_reply,
    };
    // An upstream's reply to `www.example.com A`: a CNAME, then two A.
    let question = b"\x03www\x07example\x03com\x00\x00\x01\x00\x01";
    let mut reply = vec![0, 7, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0];
    reply.extend_from_slice(question);
    reply.extend_from_slice(b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x06\x03web\xc0\x10");
    for last in [1u8, 2] {
        reply.extend_from_slice(b"\xc0\x2d\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02");
        reply.push(last);
    }
    let checked = check_upstream_reply(&reply, 7, question).unwrap();
    let entry =
        CachedAnswer::from_upstream(&checked, question, &TtlPolicy::default(), |_| false).unwrap();
    let mut query = vec![0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    query.extend_from_slice(b"\x03WwW\x07example\x03COM\x00\x00\x01\x00\x01");
    query.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
    let mut out = [0u8; 4096];
    let mut key = [0u8; MAX_CACHE_KEY];

    let before = allocations();
    let mut total = 0usize;
    for age in 0..1000u32 {
        let parsed = parse_query(&query).unwrap();
        total += cache_key(&parsed, &mut key).len();
        total += entry
            .write_reply(&parsed, TtlView::Aged(age % 30), Transport::Udp, &mut out)
            .unwrap();
    }
    let after = allocations();
    assert!(total > 0);
    assert_eq!(after - before, 0, "a cache hit allocated");
}
