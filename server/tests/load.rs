//! The load generator (`kubewire-bench run`'s engine) against a real
//! kubewire on loopback at a low rate, and against a server that drops every
//! tenth query, whose loss it must report exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kubewire_bench::load::{LoadConfig, QuerySpec, Transport, parse_query_file, run};
use std::net::UdpSocket;
use std::time::Duration;

/// One load test at a time: they share the machine's two CPUs, and the
/// closed loop would starve the exact-loss checks of the others (one run
/// in CI lost 619 of 3000 queries so).
#[allow(clippy::disallowed_types)] // a test's guard, far from the serving path
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn mix() -> Vec<QuerySpec> {
    parse_query_file(
        "# a small mix\nkubernetes.default.svc.cluster.local A\nweb.default.svc.cluster.local A\n\
         api.default.svc.cluster.local AAAA\nnope.default.svc.cluster.local A\n",
    )
    .unwrap()
}

#[test]
fn open_loop_against_kubewire() {
    let _one = one_at_a_time();
    let server = Server::start(&["--demo", "--cores", "2"]);
    let config = LoadConfig {
        server: server.addr,
        queries: mix(),
        rate: 2_000,
        duration: Duration::from_millis(1500),
        sockets: 8,
        in_flight: 0,
        timeout: Duration::from_secs(1),
        threads: 2,
        ..LoadConfig::default()
    };
    let report = run(&config, Some(server.pid())).unwrap();
    assert!(
        (2_900..=3_100).contains(&report.sent),
        "sent {}",
        report.sent
    );
    assert_eq!(report.lost, 0);
    assert_eq!(report.mismatched, 0);
    assert_eq!(report.answered, report.sent);
    // One query in four is for a name that does not exist.
    let nx = report.rcodes["NXDOMAIN"];
    assert!(
        nx * 4 >= report.sent - 4 && nx * 4 <= report.sent + 4,
        "{:?}",
        report.rcodes
    );
    assert_eq!(report.rcodes["NOERROR"] + nx, report.answered);
    let json = report.to_json(&config);
    assert_eq!(json["lost"], 0);
    let p50 = json["latency_us"]["p50"].as_u64().unwrap();
    let p99 = json["latency_us"]["p99"].as_u64().unwrap();
    let max = json["latency_us"]["max"].as_u64().unwrap();
    assert!(p50 > 0 && p50 <= p99 && p99 <= max, "{json}");
    // The server's own CPU time was measured, and is plausible: some, but
    // less than the wall time of the run on its two cores.
    let cpu = json["server_cpu_s"].as_f64().unwrap();
    assert!(cpu > 0.0 && cpu < 3.0, "{json}");
    let curve = json["percentile_curve_us"].as_array().unwrap();
    assert_eq!(curve.len(), 51);
    // (The plot of such a curve is tested in the bench crate, plot.rs.)
}

#[test]
fn tcp_with_persistent_pipelined_connections() {
    let _one = one_at_a_time();
    let server = Server::start(&["--demo", "--cores", "2"]);
    let config = LoadConfig {
        server: server.addr,
        queries: mix(),
        rate: 1_000,
        duration: Duration::from_millis(1000),
        sockets: 4,
        transport: Transport::Tcp,
        ..LoadConfig::default()
    };
    let report = run(&config, None).unwrap();
    assert!((950..=1_050).contains(&report.sent), "{report:?}");
    assert_eq!((report.lost, report.mismatched), (0, 0), "{report:?}");
    assert_eq!(report.answered, report.sent);
    let closed = LoadConfig {
        rate: 0,
        in_flight: 64,
        duration: Duration::from_millis(500),
        ..config
    };
    let report = run(&closed, None).unwrap();
    assert!(report.answered > 500, "{report:?}");
    assert_eq!((report.lost, report.mismatched), (0, 0));
}

#[test]
fn closed_loop_against_kubewire() {
    let _one = one_at_a_time();
    let server = Server::start(&["--demo", "--cores", "1"]);
    let config = LoadConfig {
        server: server.addr,
        queries: mix(),
        rate: 0,
        duration: Duration::from_millis(500),
        sockets: 4,
        in_flight: 32,
        timeout: Duration::from_secs(1),
        ..LoadConfig::default()
    };
    let report = run(&config, None).unwrap();
    assert!(report.answered > 1_000, "{report:?}");
    assert_eq!((report.lost, report.mismatched), (0, 0));
}

#[test]
fn a_server_that_drops_every_tenth_query() {
    let _one = one_at_a_time();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut count = 0u64;
        while let Ok((len, peer)) = socket.recv_from(&mut buf) {
            count += 1;
            if count.is_multiple_of(10) {
                continue;
            }
            buf[2] |= 0x80;
            let _ = socket.send_to(&buf[..len], peer);
        }
    });
    let config = LoadConfig {
        server: addr,
        queries: mix(),
        rate: 1_000,
        duration: Duration::from_millis(1000),
        sockets: 1,
        in_flight: 0,
        timeout: Duration::from_millis(300),
        ..LoadConfig::default()
    };
    let report = run(&config, None).unwrap();
    assert_eq!(report.lost, report.sent / 10, "{report:?}");
    assert_eq!(report.answered + report.lost, report.sent);
    assert_eq!(report.mismatched, 0);
}
