//! Parse, table lookup and assemble for a cached A answer: the whole of the
//! per-query work apart from the socket. The table here is a plain hash map
//! keyed by the lowercase wire name, as a core's table is.
//!
//! Run: `cargo bench -p kubewire-wire --bench reply`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kubewire_wire::{AnswerBuilder, NameBuf, Owner, Rdata, Transport, assemble_reply, parse_query};
use std::collections::HashMap;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut table: HashMap<Box<[u8]>, kubewire_wire::PreparedAnswer, ahash::RandomState> =
        HashMap::default();
    for i in 0..10_000u32 {
        let name = NameBuf::from_text(&format!("svc-{i}.default.svc.cluster.local")).unwrap();
        let mut b = AnswerBuilder::new(&name);
        b.push(Owner::Question, 5, Rdata::A(i.to_be_bytes().into()))
            .unwrap();
        table.insert(name.as_wire().into(), b.finish().unwrap());
    }
    let mut query = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    query.extend_from_slice(
        NameBuf::from_text("SVC-4242.default.svc.cluster.local")
            .unwrap()
            .as_wire(),
    );
    query.extend_from_slice(&[0, 1, 0, 1, 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
    let mut out = [0u8; 1232];

    let mut group = c.benchmark_group("reply");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_lookup_assemble_a", |b| {
        b.iter(|| {
            let parsed = parse_query(black_box(&query)).unwrap();
            let answer = table.get(parsed.key().as_wire()).unwrap();
            let len = assemble_reply(&parsed, answer.as_ref(), 0, Transport::Udp, true, &mut out)
                .unwrap();
            black_box(&out[..len]);
        })
    });
    group.bench_function("parse_only", |b| {
        b.iter(|| black_box(parse_query(black_box(&query)).unwrap().qtype()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
