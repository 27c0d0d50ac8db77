//! Settings changed on a running compiler.

use super::common::*;
use kubewire_answer::{Compiler, Kind, ObjectChange, Response, Settings};
use kubewire_wire::{Rcode, Transport};

/// Endpoints' pod names are kept only while `endpoint_pod_names` is on (a
/// cluster names a pod for nearly every endpoint); turning it on asks for
/// the slices again, and once given they answer by pod name.
#[test]
fn turning_endpoint_pod_names_on_asks_for_the_slices_again() {
    let pod_named = "web-7.hdlspod.testns.svc.cluster.local";
    let answers_pod_name = |compiler: &Compiler| {
        let mut table = table_from(compiler);
        let mut out = vec![0u8; 4096];
        matches!(
            table.respond(&query(pod_named, 1, 1), Transport::Udp, &mut out),
            Response::Reply { rcode, .. } if rcode == Rcode::NOERROR
        )
    };
    let mut compiler = compile(Settings::default(), fixture_objects(), true);
    assert!(!answers_pod_name(&compiler));
    let on = Settings {
        endpoint_pod_names: true,
        ..Settings::default()
    };
    assert!(
        compiler.set_settings(on.clone()),
        "the slices are needed again"
    );
    compiler.take_delta();
    assert!(
        !answers_pod_name(&compiler),
        "the pod names were not kept while the setting was off"
    );
    for change in ObjectChange::relist(
        Kind::Slice,
        fixture_objects()
            .into_iter()
            .filter(|o| o.kind() == Kind::Slice)
            .collect(),
    ) {
        compiler.apply(change);
    }
    compiler.take_delta();
    assert!(answers_pod_name(&compiler), "relisted, they answer");
    // Turning it off, or changing anything else, needs no relist.
    let mut off_again = on.clone();
    off_again.endpoint_pod_names = false;
    assert!(!compiler.set_settings(on));
    assert!(!compiler.set_settings(off_again));
}

/// A name is filed under its labels below its zone's apex and the zone's
/// index ([`kubewire_answer::TableKey`]). A new zone whose apex is longer
/// comes first and moves every other zone's index, so the same key bytes
/// now stand for another name: the next delta must take every old key
/// away and give every new one, and a core fed only deltas must end with
/// exactly what a fresh compile of the new settings holds.
#[test]
fn a_new_zone_moves_every_key_and_a_core_fed_deltas_follows() {
    use kubewire_answer::{NameEntry, Update};
    use kubewire_wire::NameBuf;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    let entries = |iter: &mut dyn Iterator<Item = &NameEntry>| {
        iter.map(|e| (e.table_key().to_vec(), e.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let mut compiler = compile(Settings::default(), fixture_objects(), true);
    let mut core = table_from(&compiler);
    let before = compiler.zones().zones.len();
    let wider = Settings {
        zones: ["cluster.local", "a-longer-apex.example.internal"]
            .iter()
            .map(|z| NameBuf::from_text(z).unwrap())
            .collect(),
        ..Settings::default()
    };
    assert!(
        !compiler.set_settings(wider.clone()),
        "no relist: endpoint pod names stay off"
    );
    let delta = compiler.take_delta().expect("new zones make a delta");
    assert!(core.apply(&Update::Delta(Arc::new(delta))));
    assert_eq!(compiler.zones().zones.len(), before + 1);
    assert_eq!(
        compiler.zones().zones[0].apex,
        NameBuf::from_text("a-longer-apex.example.internal").unwrap()
    );
    let fresh = compile(wider, fixture_objects(), true);
    let expected = entries(&mut fresh.entries());
    assert_eq!(entries(&mut compiler.entries()), expected);
    assert_eq!(entries(&mut core.entries()), expected);
    // The core answers from both zones, and PTRs name both (svc1 and
    // svcempty share 10.0.0.1).
    let mut tester = Tester { table: core };
    for name in [
        "svc1.testns.svc.cluster.local",
        "svc1.testns.svc.a-longer-apex.example.internal",
    ] {
        tester.check(
            name,
            "A",
            "NOERROR",
            &[&format!("{name}. 5 A 10.0.0.1")],
            &[],
            &[],
        );
    }
    tester.check(
        "1.0.0.10.in-addr.arpa",
        "PTR",
        "NOERROR",
        &[
            "1.0.0.10.in-addr.arpa. 5 PTR svc1.testns.svc.a-longer-apex.example.internal.",
            "1.0.0.10.in-addr.arpa. 5 PTR svc1.testns.svc.cluster.local.",
            "1.0.0.10.in-addr.arpa. 5 PTR svcempty.testns.svc.a-longer-apex.example.internal.",
            "1.0.0.10.in-addr.arpa. 5 PTR svcempty.testns.svc.cluster.local.",
        ],
        &[],
        &[],
    );
}
