//! End to end: startup failures name their cause and fix, and signals stop
//! the server cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hickory_proto::rr::RecordType;
use std::time::Duration;

fn fails_with(args: &[&str], addr: std::net::SocketAddr, needle: &str) {
    let server = Server::spawn(args, addr);
    let (status, log) = server.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "should fail: {log}");
    assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
}

fn addr() -> std::net::SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

#[test]
fn startup_errors_name_the_cause_and_the_fix() {
    // No cluster anywhere: the error lists what was tried.
    let home = std::env::temp_dir().join(format!("kubewire-home-{}", free_port()));
    std::fs::create_dir_all(&home).unwrap();
    let server = Server::spawn_with_env(
        &[],
        addr(),
        &[
            ("HOME", Some(home.to_str().unwrap())),
            ("KUBECONFIG", None),
            ("KUBERNETES_SERVICE_HOST", None),
        ],
    );
    let (status, log) = server.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    assert!(
        log.contains("no Kubernetes cluster found. Tried: $KUBECONFIG (unset); ~/.kube/config"),
        "{log}"
    );
    assert!(log.contains("in-cluster service account"), "{log}");
    assert!(log.contains("--kubeconfig PATH"), "{log}");
    // A bad kubeconfig.
    let bad = home.join("bad-kubeconfig");
    std::fs::write(&bad, "this: [is not a kubeconfig\n").unwrap();
    // The cause follows, as the error's source.
    fails_with(
        &["--kubeconfig", bad.to_str().unwrap()],
        addr(),
        &format!(
            "--kubeconfig {} cannot be used (fix the file or point --kubeconfig at a working one): \
             failed to parse kubeconfig YAML",
            bad.display()
        ),
    );
    fails_with(
        &["--manifests", "/nonexistent/kubewire"],
        addr(),
        "cannot read /nonexistent/kubewire",
    );
    fails_with(
        &["--demo", "--cores", "0,99"],
        addr(),
        "CPU 99 does not exist or is not in this process's affinity mask",
    );
    fails_with(
        &["--demo", "--zone", "a..b"],
        addr(),
        // Parsed with the flags, so the flag is named.
        "error: invalid value 'a..b' for '--zone <ZONE>': \"a..b\" is not a DNS name: empty label",
    );

    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap();
    fails_with(
        &["--demo"],
        taken,
        &format!("cannot listen on UDP {taken}: the port is in use by another process"),
    );

    let dir = std::env::temp_dir().join(format!("kubewire-broken-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.yaml"),
        "kind: Service\nmetadata: {name: x, namespace: default}\nspec:\n  clusterIP: [\n",
    )
    .unwrap();
    fails_with(&["--manifests", dir.to_str().unwrap()], addr(), "bad.yaml:");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_and_sigint_stop_cleanly() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // A short lameduck: the lameduck itself is tested in operations.rs.
        let server = Server::start(&["--demo", "--cores", "2", "--lameduck-ms", "100"]);
        assert_eq!(
            rcode(&server.udp("kubernetes.default.svc.cluster.local", RecordType::A)),
            0
        );
        server.signal(signal);
        let (status, log) = server.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "exit status {status:?}:\n{log}");
        assert!(log.contains("stopped"), "{log}");
    }
}
