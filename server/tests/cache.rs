//! The cache of forwarded answers end to end: the real binary, the scripted
//! upstream on loopback, and hickory-proto as the client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::upstream::{Behaviour, Upstream};
use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};
use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

/// kubewire on the demo cluster, forwarding to `upstream`, with `[cache]`
/// and other settings from `config`.
fn caching(upstream: &Upstream, cores: &str, config: &str) -> Server {
    let dir = tempdir("cache-config");
    let path = dir.join("kubewire.toml");
    std::fs::write(&path, config).unwrap();
    let path = path.display().to_string();
    let to = upstream.addr.to_string();
    Server::start(&[
        "--demo",
        "--cores",
        cores,
        "--forward",
        to.as_str(),
        "--config",
        path.as_str(),
    ])
    .keeping(dir)
}

fn ttls(message: &Message) -> Vec<u32> {
    message
        .answers
        .iter()
        .chain(&message.authorities)
        .map(|r| r.ttl)
        .collect()
}

fn metrics(server: &mut Server) -> String {
    http_get(server.http_addr("metrics"), "/metrics").1
}

const SERVER: &str = "server=\"dns://127.0.0.1";

/// A series of the cache's, with the labels every series carries.
fn cache_series(body: &str, name: &str, kind: Option<&str>) -> f64 {
    let line = body.lines().find(|line| {
        line.starts_with(&format!("{name}{{"))
            && line.contains(SERVER)
            && kind.is_none_or(|k| line.contains(&format!("type=\"{k}\"")))
    });
    line.and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_hit_is_served_with_aged_ttls_in_the_clients_case() {
    let upstream = Upstream::start();
    upstream.answer("www.example.com", Ipv4Addr::new(192, 0, 2, 80));
    let mut server = caching(&upstream, "2", "");
    let first = server.udp("www.example.com", RecordType::A);
    assert_eq!(answers(&first), ["www.example.com. A 192.0.2.80"]);
    // The upstream said 60; the cap is 30.
    assert_eq!(ttls(&first), [30]);
    assert_eq!(upstream.queries(), 1);
    std::thread::sleep(Duration::from_millis(1100));
    // Another letter case, over UDP and TCP: from the cache, the client's
    // case echoed, the TTL one second lower.
    let hit = server.udp("WwW.ExAmPlE.CoM", RecordType::A);
    assert_eq!(answers(&hit), ["WwW.ExAmPlE.CoM. A 192.0.2.80"]);
    assert_eq!(hit.queries[0].name().to_ascii(), "WwW.ExAmPlE.CoM.");
    assert!(hit.metadata.recursion_available);
    assert_eq!(ttls(&hit), [29]);
    let hit = server.tcp("WWW.EXAMPLE.COM", RecordType::A);
    assert_eq!(answers(&hit), ["WWW.EXAMPLE.COM. A 192.0.2.80"]);
    assert_eq!(upstream.queries(), 1, "one upstream query for the name");
    // Another type is another key (the upstream's empty NOERROR has no SOA
    // to time it, so it is not kept).
    server.udp("www.example.com", RecordType::AAAA);
    assert_eq!(upstream.queries(), 2);
    server.udp("www.example.com", RecordType::AAAA);
    assert_eq!(upstream.queries(), 3);
    let body = metrics(&mut server);
    assert_eq!(
        cache_series(&body, "coredns_cache_hits_total", Some("success")),
        2.0,
        "{body}"
    );
    assert_eq!(
        cache_series(&body, "coredns_cache_entries", Some("success")),
        1.0
    );
    // Each lookup counted once: three misses and two hits.
    assert_eq!(
        cache_series(&body, "coredns_cache_requests_total", None),
        5.0
    );
    assert_eq!(cache_series(&body, "coredns_cache_misses_total", None), 3.0);
    assert!(
        body.contains("coredns_dns_responses_total{")
            && body
                .lines()
                .any(|l| l.contains("plugin=\"cache\"") && l.contains("rcode=\"NOERROR\"")),
        "{body}"
    );
}

#[test]
fn negative_answers_are_cached_for_the_soa_minimum_and_without_an_soa_not_at_all() {
    let upstream = Upstream::start();
    let server = caching(&upstream, "1", "");
    let first = server.udp("nxsoa.example.com", RecordType::A);
    assert_eq!(rcode(&first), 3);
    // min(SOA TTL 3600, MINIMUM 10), under the cap of 30.
    assert_eq!(ttls(&first), [10]);
    std::thread::sleep(Duration::from_millis(1100));
    let hit = server.udp("NXSOA.example.com", RecordType::A);
    assert_eq!(rcode(&hit), 3);
    assert_eq!(ttls(&hit), [9]);
    assert_eq!(hit.authorities.len(), 1);
    assert_eq!(upstream.queries(), 1);
    // NXDOMAIN without an SOA: asked every time.
    for _ in 0..2 {
        assert_eq!(rcode(&server.udp("nxbare.example.com", RecordType::A)), 3);
    }
    assert_eq!(upstream.queries(), 3);
}

#[test]
fn servfail_is_cached_briefly_and_not_at_all_with_zero() {
    let upstream = Upstream::start();
    upstream.set(Behaviour::ServFail);
    let server = caching(&upstream, "1", "");
    for _ in 0..3 {
        assert_eq!(rcode(&server.udp("broken.example.com", RecordType::A)), 2);
    }
    assert_eq!(upstream.queries(), 1, "SERVFAIL cached for 5 s");
    drop(server);
    let off = caching(&upstream, "1", "[cache]\nservfail_ttl_s = 0\n");
    for _ in 0..3 {
        assert_eq!(rcode(&off.udp("broken2.example.com", RecordType::A)), 2);
    }
    assert_eq!(upstream.queries(), 4);
}

#[test]
fn a_unique_name_flood_is_held_to_the_entry_and_byte_caps() {
    let upstream = Upstream::start();
    let mut server = caching(&upstream, "2", "[cache]\nmax_entries = 50\n");
    for i in 0..300 {
        let name = format!("flood{i}.example.com");
        assert_eq!(rcode(&server.udp(&name, RecordType::A)), 0);
    }
    let body = metrics(&mut server);
    let entries = cache_series(&body, "coredns_cache_entries", Some("success"));
    assert!((40.0..=50.0).contains(&entries), "{entries}\n{body}");
    assert!(
        cache_series(&body, "coredns_cache_evictions_total", Some("success")) >= 250.0,
        "{body}"
    );
    drop(server);
    // About a kilobyte an entry ("many" names answer sixty records): the
    // byte cap binds first.
    let mut server = caching(&upstream, "1", "[cache]\nmax_bytes = 65536\n");
    for i in 0..300 {
        let name = format!("many{i}.example.com");
        assert_eq!(rcode(&server.tcp(&name, RecordType::A)), 0);
    }
    let body = metrics(&mut server);
    let bytes = metric(&body, "kubewire_cache_bytes");
    let entries = cache_series(&body, "coredns_cache_entries", Some("success"));
    assert!(bytes <= 65536.0 && bytes > 30_000.0, "{bytes}\n{body}");
    assert!(entries < 100.0, "{entries}");
}

#[test]
fn a_popular_entry_is_prefetched_before_it_expires() {
    let upstream = Upstream::start();
    let mut server = caching(
        &upstream,
        "1",
        "[cache]\nmin_ttl_s = 1\nmax_ttl_s = 4\nprefetch_amount = 2\nprefetch_percent = 50\n",
    );
    server.udp("hot.example.com", RecordType::A);
    server.udp("hot.example.com", RecordType::A);
    assert_eq!(upstream.queries(), 1, "more than half the TTL left");
    std::thread::sleep(Duration::from_millis(2500));
    // Two seconds or less left, third hit in a row: answered from the
    // cache, and refreshed behind.
    let started = Instant::now();
    assert_eq!(
        answers(&server.udp("hot.example.com", RecordType::A)),
        ["hot.example.com. A 192.0.2.1"]
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    eventually("the prefetch", || upstream.queries() == 2);
    // Past the first entry's expiry, the refreshed one answers: no miss.
    std::thread::sleep(Duration::from_millis(2000));
    let hit = server.udp("hot.example.com", RecordType::A);
    assert!(ttls(&hit)[0] >= 1, "{hit:?}");
    assert_eq!(upstream.queries(), 2);
    let body = metrics(&mut server);
    assert_eq!(
        cache_series(&body, "coredns_cache_prefetch_total", None),
        1.0
    );
}

#[test]
fn stale_entries_answer_while_the_upstream_is_dead_then_it_recovers() {
    let upstream = Upstream::start();
    upstream.answer("steady.example.com", Ipv4Addr::new(192, 0, 2, 10));
    let mut server = caching(
        &upstream,
        "2",
        "[forward]\ntimeout_ms = 200\nmax_attempts = 1\nmax_fails = 0\n\n\
         [cache]\nmin_ttl_s = 1\nmax_ttl_s = 1\nserve_stale_s = 60\nstale_ttl_s = 30\n",
    );
    server.udp("steady.example.com", RecordType::A);
    upstream.set(Behaviour::Drop);
    std::thread::sleep(Duration::from_millis(1200));
    // Expired, upstream dead: the stale answer at once, TTL 30.
    let started = Instant::now();
    let stale = server.udp("steady.example.com", RecordType::A);
    assert!(started.elapsed() < Duration::from_millis(150));
    assert_eq!(answers(&stale), ["steady.example.com. A 192.0.2.10"]);
    assert_eq!(ttls(&stale), [30]);
    // The refresh behind it fails; the next stale answer asks again.
    eventually("the refresh", || upstream.queries() >= 2);
    std::thread::sleep(Duration::from_millis(300));
    // The upstream is back, with a new address.
    upstream.set(Behaviour::Answer);
    upstream.answer("steady.example.com", Ipv4Addr::new(192, 0, 2, 11));
    eventually("the new address", || {
        answers(&server.udp("steady.example.com", RecordType::A))
            == ["steady.example.com. A 192.0.2.11"]
    });
    let body = metrics(&mut server);
    assert!(cache_series(&body, "coredns_cache_served_stale_total", None) >= 2.0);
    drop(server);

    // verify: the upstream first, the stale entry only when it fails.
    let upstream = Upstream::start();
    let server = caching(
        &upstream,
        "1",
        "[forward]\ntimeout_ms = 200\nmax_attempts = 1\nmax_fails = 0\n\n\
         [cache]\nmin_ttl_s = 1\nmax_ttl_s = 1\nserve_stale_s = 60\nserve_stale_mode = \"verify\"\n",
    );
    server.udp("steady.example.com", RecordType::A);
    std::thread::sleep(Duration::from_millis(1200));
    server.udp("steady.example.com", RecordType::A);
    assert_eq!(upstream.queries(), 2, "asked first while it answers");
    upstream.set(Behaviour::ServFail);
    std::thread::sleep(Duration::from_millis(1200));
    let stale = server.udp("steady.example.com", RecordType::A);
    assert_eq!(rcode(&stale), 0, "its SERVFAIL does not push out the entry");
    assert_eq!(answers(&stale), ["steady.example.com. A 192.0.2.1"]);
    assert_eq!(upstream.queries(), 3);
}

#[test]
fn concurrent_misses_on_every_core_make_one_upstream_query() {
    let upstream = Upstream::start();
    upstream.set(Behaviour::Delay(300));
    let server = caching(&upstream, "2", "");
    // 100 clients, each its own source port (so both cores see some),
    // asking one name at once.
    let query = build_query("busy.example.com", RecordType::A, None);
    let sockets: Vec<UdpSocket> = (0..100)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for socket in &sockets {
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        socket.send_to(&query, server.addr).unwrap();
    }
    for socket in &sockets {
        let mut buf = [0u8; 1500];
        let (len, _) = socket.recv_from(&mut buf).expect("a reply");
        let reply = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(answers(&reply), ["busy.example.com. A 192.0.2.1"]);
    }
    assert_eq!(upstream.queries(), 1);
    // Filled by one core, served by all: 32 more source ports, one at a time.
    upstream.set(Behaviour::Answer);
    server.udp("fill.example.com", RecordType::A);
    for _ in 0..32 {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let query = build_query("fill.example.com", RecordType::A, None);
        let reply = udp_query_from(&socket, server.addr, &query);
        assert_eq!(answers(&reply), ["fill.example.com. A 192.0.2.1"]);
    }
    assert_eq!(upstream.queries(), 2);
}

#[test]
fn records_an_upstream_slips_in_for_other_names_are_never_served() {
    let upstream = Upstream::start();
    upstream.answer("victim.example.com", Ipv4Addr::new(192, 0, 2, 99));
    let server = caching(&upstream, "2", "");
    let reply = server.udp("poison.example.com", RecordType::A);
    assert_eq!(answers(&reply), ["poison.example.com. A 192.0.2.7"]);
    assert!(reply.additionals.is_empty(), "{reply:?}");
    // The forged record did not become the victim's answer.
    let victim = server.udp("victim.example.com", RecordType::A);
    assert_eq!(answers(&victim), ["victim.example.com. A 192.0.2.99"]);
    assert_eq!(upstream.queries(), 2);
    let hit = server.udp("poison.example.com", RecordType::A);
    assert_eq!(answers(&hit), ["poison.example.com. A 192.0.2.7"]);
    assert_eq!(upstream.queries(), 2);
}

#[test]
fn cluster_names_are_never_cached() {
    let upstream = Upstream::start();
    let server = caching(
        &upstream,
        "1",
        "[kubernetes]\nfallthrough = [\"cluster.local\"]\n",
    );
    // A cluster-zone name no object answers falls through to the upstream,
    // which answers it: passed on each time, never kept.
    for _ in 0..2 {
        let reply = server.udp("ghost.default.svc.cluster.local", RecordType::A);
        assert_eq!(rcode(&reply), 0);
    }
    assert_eq!(upstream.queries(), 2);
    // Cluster answers come from the table, never the upstream.
    let reply = server.udp("kubernetes.default.svc.cluster.local", RecordType::A);
    assert!(matches!(reply.answers[0].data, RData::A(_)));
    assert_eq!(upstream.queries(), 2);
}
