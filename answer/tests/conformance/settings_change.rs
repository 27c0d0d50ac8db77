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
