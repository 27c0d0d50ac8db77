//! The delta hub: every core gets every change, a core that falls behind
//! gets a Reset instead of a gap, stale updates are ignored, and readiness
//! is known once every core holds the first full sync.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kubewire_answer::{AnswerTable, Compiler, DeltaHub, ObjectChange, Settings, Update};
use kubewire_wire::Transport;

fn drain(receiver: &kubewire_answer::DeltaReceiver, table: &mut AnswerTable) -> usize {
    let mut applied = 0;
    while let Ok(update) = receiver.receiver().try_recv() {
        if table.apply(&update) {
            applied += 1;
        }
        receiver
            .status()
            .record(table.revision(), table.synced(), table.len() as u64, 0);
    }
    applied
}

fn answers_a(table: &mut AnswerTable, name: &str) -> bool {
    let mut out = vec![0u8; 4096];
    match table.respond(&query(name, 1, 1), Transport::Udp, &mut out) {
        kubewire_answer::Response::Reply { rcode, .. } => rcode == kubewire_wire::Rcode::NOERROR,
        _ => false,
    }
}

#[test]
fn every_core_follows_and_readiness_needs_all() {
    let mut compiler = Compiler::new(Settings::default());
    let mut hub = DeltaHub::new(4);
    let cores: Vec<_> = (0..3)
        .map(|_| hub.subscribe(|| compiler.snapshot()))
        .collect();
    let mut tables: Vec<AnswerTable> = (0..3).map(|_| AnswerTable::new()).collect();

    for object in fixture_objects() {
        compiler.apply(ObjectChange::Upsert(object));
    }
    compiler.mark_synced();
    let delta = compiler.take_delta().unwrap();
    let revision = delta.revision;
    hub.publish(delta, || compiler.snapshot());
    assert!(!hub.all_applied(revision), "nothing applied yet");
    for (core, table) in cores.iter().zip(&mut tables).take(2) {
        drain(core, table);
    }
    assert!(!hub.all_applied(revision), "one core is still behind");
    drain(&cores[2], &mut tables[2]);
    assert!(hub.all_applied(revision));
    for table in &mut tables {
        assert!(table.synced());
        assert!(answers_a(table, "svc1.testns.svc.cluster.local"));
    }
}

#[test]
fn a_core_that_falls_behind_gets_a_reset() {
    let mut compiler = Compiler::new(Settings::default());
    let mut hub = DeltaHub::new(2);
    let fast = hub.subscribe(|| compiler.snapshot());
    let slow = hub.subscribe(|| compiler.snapshot());
    let (mut fast_table, mut slow_table) = (AnswerTable::new(), AnswerTable::new());
    drain(&fast, &mut fast_table);

    // Ten changes; the slow core reads nothing meanwhile, so its channel
    // (capacity 2, holding the initial Reset) overflows.
    for i in 0..10u8 {
        compiler.apply(ObjectChange::Upsert(cluster_ip(
            "default",
            &format!("svc{i}"),
            &[&format!("10.1.0.{i}")],
            vec![],
        )));
        let delta = compiler.take_delta().unwrap();
        hub.publish(delta, || compiler.snapshot());
        drain(&fast, &mut fast_table);
    }
    assert!(hub.resets_pending());
    // The slow core drains what it has: the first Reset and one delta.
    drain(&slow, &mut slow_table);
    assert!(slow_table.revision() < compiler.revision());
    // Room again: the hub sends a Reset with the whole state.
    hub.retry_resets(|| compiler.snapshot());
    assert!(!hub.resets_pending());
    drain(&slow, &mut slow_table);
    assert_eq!(slow_table.revision(), compiler.revision());
    assert!(answers_a(&mut slow_table, "svc9.default.svc.cluster.local"));
    assert_eq!(slow_table.len(), fast_table.len());
}

#[test]
fn stale_and_out_of_order_updates_are_ignored() {
    let mut compiler = Compiler::new(Settings::default());
    compiler.apply(ObjectChange::Upsert(cluster_ip(
        "default",
        "a",
        &["10.1.0.1"],
        vec![],
    )));
    let first = Update::Delta(std::sync::Arc::new(compiler.take_delta().unwrap()));
    compiler.apply(ObjectChange::Upsert(cluster_ip(
        "default",
        "b",
        &["10.1.0.2"],
        vec![],
    )));
    let second = Update::Delta(std::sync::Arc::new(compiler.take_delta().unwrap()));
    let snapshot = Update::Reset(std::sync::Arc::new(compiler.snapshot()));

    let mut table = AnswerTable::new();
    // A delta that does not follow on from what the table holds.
    assert!(!table.apply(&second));
    assert!(table.apply(&first));
    assert!(table.apply(&second));
    // Replayed: stale.
    assert!(!table.apply(&first));
    assert!(!table.apply(&second));
    assert!(table.apply(&snapshot));
    // An older Reset is ignored.
    let mut newer = AnswerTable::new();
    assert!(newer.apply(&snapshot));
    compiler.apply(ObjectChange::Upsert(cluster_ip(
        "default",
        "c",
        &["10.1.0.3"],
        vec![],
    )));
    assert!(newer.apply(&Update::Delta(std::sync::Arc::new(
        compiler.take_delta().unwrap()
    ))));
    assert!(!newer.apply(&snapshot));
    assert!(answers_a(&mut newer, "c.default.svc.cluster.local"));
}

#[test]
fn a_relist_never_removes_a_name_that_stays() {
    let mut compiler = compile(Settings::default(), fixture_objects(), true);
    let services: Vec<_> = fixture_objects()
        .into_iter()
        .filter(|o| o.kind() == kubewire_answer::Kind::Service && o.key().name != "svc6")
        .collect();
    for change in ObjectChange::relist(kubewire_answer::Kind::Service, services) {
        compiler.apply(change);
    }
    let delta = compiler.take_delta().unwrap();
    // Only svc6's names change: no Remove of any other name, no Upsert of svc1.
    for change in &delta.changes {
        let key = match change {
            kubewire_answer::Change::Upsert(entry) => entry.table_key().to_vec(),
            kubewire_answer::Change::Remove(key) => key.to_vec(),
            other => panic!("a service relist changed a pod address: {other:?}"),
        };
        let text = delta.zones.name_of(&key).unwrap().to_string();
        assert!(
            text.contains("svc6") || text.contains("ip6.arpa"),
            "unexpected change to {text}"
        );
    }
    assert!(!delta.changes.is_empty());
}

/// The cores share one index of every name; a core never holds the last
/// reference to one, so it never spends its time freeing it: the hub lets
/// go of an index only once no core holds it.
#[test]
fn cores_share_one_index_and_the_hub_frees_the_old_ones() {
    let mut compiler = Compiler::new(Settings::default());
    compiler.set_reindex_after(1);
    let mut hub = DeltaHub::new(8);
    let cores: Vec<_> = (0..2)
        .map(|_| hub.subscribe(|| compiler.snapshot()))
        .collect();
    let mut tables: Vec<AnswerTable> = (0..2).map(|_| AnswerTable::new()).collect();
    for object in fixture_objects() {
        compiler.apply(ObjectChange::Upsert(object));
    }
    compiler.mark_synced();
    let delta = compiler.take_delta().unwrap();
    // Watched without a reference of its own: the hub counts references.
    let first =
        std::sync::Arc::downgrade(delta.names.as_ref().expect("the first sync ships an index"));
    let first_len = delta.names.as_ref().map_or(0, |index| index.len());
    hub.publish(delta, || compiler.snapshot());
    for (core, table) in cores.iter().zip(&mut tables) {
        drain(core, table);
        assert_eq!(
            table.overlaid(),
            0,
            "a core holds nothing over a fresh index"
        );
        assert_eq!(table.len(), first_len);
    }
    // Held by the compiler, the hub and both cores.
    assert_eq!(first.strong_count(), 4);

    // Enough changes for a new index: one core takes it, the other lags.
    for i in 0..40u8 {
        compiler.apply(ObjectChange::Upsert(cluster_ip(
            "default",
            &format!("new{i}"),
            &[&format!("10.2.0.{i}")],
            vec![],
        )));
    }
    let delta = compiler.take_delta().unwrap();
    assert!(delta.names.is_some(), "40 new Services earn a new index");
    hub.publish(delta, || compiler.snapshot());
    drain(&cores[0], &mut tables[0]);
    assert!(answers_a(&mut tables[0], "new7.default.svc.cluster.local"));
    hub.release_indexes();
    assert_eq!(
        hub.indexes_held(),
        2,
        "the lagging core still holds the first"
    );
    assert_eq!(first.strong_count(), 2, "the hub and the lagging core");
    drain(&cores[1], &mut tables[1]);
    assert!(answers_a(&mut tables[1], "new7.default.svc.cluster.local"));
    // The lagging core let go of it: the hub's is the last reference, and
    // the hub frees it.
    assert_eq!(first.strong_count(), 1);
    hub.release_indexes();
    assert_eq!(hub.indexes_held(), 1);
    assert_eq!(first.strong_count(), 0);
}
