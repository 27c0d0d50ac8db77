//! DNS over TLS (RFC 7858) and over HTTPS (RFC 8484) served: real clients
//! (kdig, dig, curl, h2load, hickory's DoT and DoH clients, and rustls with
//! hickory parsing), a busy connection driven by the core's own poll, a
//! certificate rotated under open connections, mutual TLS, handshakes that
//! are slow, broken or refused, and HTTP requests that are not DNS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::tls::*;
use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KUBERNETES: &str = "kubernetes.default.svc.cluster.local";

/// The common name of the certificate the server presented.
fn presented(stream: &TlsStream) -> String {
    let der = &stream.conn.peer_certificates().unwrap()[0];
    // The test's names are ASCII, inside the DER as they were given.
    ["first", "second", "third"]
        .into_iter()
        .find(|cn| der.windows(cn.len()).any(|w| w == cn.as_bytes()))
        .unwrap_or("unknown")
        .to_string()
}

/// Waits for one more log line with `needle` than has been seen so far.
fn wait_for_another(server: &mut Server, needle: &str) -> String {
    let count = |server: &Server| server.seen.iter().filter(|l| l.contains(needle)).count();
    let before = count(server);
    let start = Instant::now();
    while count(server) == before {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no new {needle:?} line"
        );
        // Takes in the lines logged meanwhile.
        server.logged("\u{0}", Duration::from_millis(50));
    }
    server
        .seen
        .iter()
        .rev()
        .find(|l| l.contains(needle))
        .unwrap()
        .clone()
}

fn kubernetes_answer() -> Vec<String> {
    vec![format!("{KUBERNETES}. A 10.96.0.1")]
}

fn metrics_text(server: &mut Server) -> String {
    http_get(server.http_addr("metrics"), "/metrics").1
}

/// Whether `program` is here; without it a test skips with one line,
/// unless `KUBEWIRE_REQUIRE_TOOLS=1` (CI).
fn tool(program: &str, package: &str) -> bool {
    if Command::new(program).arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var(netns::REQUIRE_TOOLS)
            .ok()
            .is_none_or(|v| v != "1"),
        "{program} is missing: apt-get install {package}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {program} is missing (apt-get install {package})"
    );
    false
}

#[test]
fn kdig_over_tls_gets_the_answers_udp_gets() {
    if !tool("kdig", "knot-dnsutils") {
        return;
    }
    let pki = Pki::new("tls-kdig", "kubewire-test-ca");
    pki.write_serving("first");
    let (mut server, tls_addr) = serve_tls(&pki, &[]);
    let output = Command::new("kdig")
        .arg(format!("@{}", tls_addr.ip()))
        .args(["-p", &tls_addr.port().to_string()])
        .arg(format!("+tls-ca={}", pki.ca_file().display()))
        .arg(format!("+tls-hostname={SERVER_NAME}"))
        .args(["+keepopen", "+short", KUBERNETES, "A"])
        .args(["+short", "nope.default.svc.cluster.local", "A"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "kdig: {output:?}");
    assert_eq!(stdout.trim(), "10.96.0.1", "{output:?}");
    let output = Command::new("kdig")
        .arg(format!("@{}", tls_addr.ip()))
        .args(["-p", &tls_addr.port().to_string()])
        .arg(format!("+tls-ca={}", pki.ca_file().display()))
        .arg(format!("+tls-hostname={SERVER_NAME}"))
        .args(["nope.default.svc.cluster.local", "A"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("status: NXDOMAIN"), "{stdout}");
    assert!(stdout.contains("TLS session (TLS1.3)"), "{stdout}");
    // Under CoreDNS's labels: server tls://ADDR, proto tcp.
    let text = metrics_text(&mut server);
    let server_label = format!("tls://{tls_addr}");
    let requests = format!(
        "coredns_dns_requests_total{{server=\"{server_label}\",zone=\".\",view=\"\",proto=\"tcp\",family=\"1\",type=\"A\"}}"
    );
    assert!(metric(&text, &requests) >= 3.0, "{text}");
    let done =
        format!("kubewire_tls_handshakes_total{{server=\"{server_label}\",outcome=\"done\"}}");
    assert_eq!(metric(&text, &done), 2.0, "{text}");
    assert_eq!(
        answers(&server.udp(KUBERNETES, RecordType::A)),
        kubernetes_answer()
    );
}

#[test]
fn one_connection_carries_many_queries_with_alpn_dot() {
    let pki = Pki::new("tls-many", "kubewire-test-ca");
    pki.write_serving("first");
    let (_server, tls_addr) = serve_tls(&pki, &[]);
    let mut stream = connect(tls_addr, client_config(&pki.ca_file(), None)).unwrap();
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"dot"[..]));
    for _ in 0..20 {
        let reply = ask(&mut stream, KUBERNETES, RecordType::A).unwrap();
        assert_eq!(answers(&reply), kubernetes_answer());
    }
    let reply = ask(&mut stream, "nope.default.svc.cluster.local", RecordType::A).unwrap();
    assert_eq!(rcode(&reply), 3);
    // Pipelined: 30 queries in one TLS write, 30 replies in order.
    let names: Vec<String> = (0..30)
        .map(|i| match i % 3 {
            0 => KUBERNETES.to_string(),
            _ => format!("nope{i}.default.svc.cluster.local"),
        })
        .collect();
    let mut framed = Vec::new();
    for name in &names {
        let query = build_query(name, RecordType::A, None);
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(&query);
    }
    stream.write_all(&framed).unwrap();
    stream.flush().unwrap();
    for name in &names {
        let mut prefix = [0u8; 2];
        stream.read_exact(&mut prefix).unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut reply).unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.queries[0].name().to_string(), format!("{name}."));
        assert_eq!(rcode(&reply), if name == KUBERNETES { 0 } else { 3 });
    }
}

#[test]
fn a_rotated_certificate_reaches_new_connections_and_open_ones_keep_working() {
    let pki = Pki::new("tls-rotate", "kubewire-test-ca");
    pki.write_serving("first");
    let (mut server, tls_addr) = serve_tls(&pki, &["--tls-reload-check-ms", "50"]);
    let config = client_config(&pki.ca_file(), None);
    let mut open = connect(tls_addr, Arc::clone(&config)).unwrap();
    assert_eq!(presented(&open), "first");

    pki.write_serving("second");
    server.wait_for_log("a new certificate loaded", Duration::from_secs(10));
    let mut fresh = connect(tls_addr, Arc::clone(&config)).unwrap();
    assert_eq!(presented(&fresh), "second");
    assert_eq!(
        answers(&ask(&mut fresh, KUBERNETES, RecordType::A).unwrap()),
        kubernetes_answer()
    );
    // The connection opened before still answers, on its first certificate.
    assert_eq!(
        answers(&ask(&mut open, KUBERNETES, RecordType::A).unwrap()),
        kubernetes_answer()
    );

    // A bad new certificate (a key that is not the certificate's) keeps the
    // one in use, and says so.
    let (cert, _) = pki.leaf("third", &[SERVER_NAME]);
    replace(&pki.dir.join("tls.crt"), &cert);
    // (The rotation above may have been read half-written once, and said
    // so: wait for a new line.)
    let line = wait_for_another(&mut server, "keeping the certificate in use");
    assert!(line.contains("is the key the certificate's?"), "{line}");
    let mut after = connect(tls_addr, config).unwrap();
    assert_eq!(presented(&after), "second");
    assert_eq!(
        answers(&ask(&mut after, KUBERNETES, RecordType::A).unwrap()),
        kubernetes_answer()
    );
}

#[test]
fn mutual_tls_takes_only_clients_with_a_certificate_from_its_ca() {
    let pki = Pki::new("tls-mutual", "kubewire-test-ca");
    pki.write_serving("first");
    let ca = pki.ca_file().display().to_string();
    let (mut server, tls_addr) = serve_tls(&pki, &["--tls-client-ca-file", &ca]);
    let ca_file = pki.ca_file();

    let client = pki.leaf("pod-client", &["client.example"]);
    let mut stream = connect(tls_addr, client_config(&ca_file, Some(client))).unwrap();
    assert_eq!(
        answers(&ask(&mut stream, KUBERNETES, RecordType::A).unwrap()),
        kubernetes_answer()
    );

    // No certificate, or one from another CA: refused. With TLS 1.3 the
    // client learns it on its first read.
    let stranger = Pki::new("tls-stranger", "another-ca").leaf("stranger", &["client.example"]);
    for client in [None, Some(stranger)] {
        let refused = connect(tls_addr, client_config(&ca_file, client))
            .and_then(|mut stream| ask(&mut stream, KUBERNETES, RecordType::A));
        assert!(refused.is_err(), "{refused:?}");
    }
    // The server counts a refused handshake once its alert is out, so
    // the client may hear of it first.
    let failed =
        format!("kubewire_tls_handshakes_total{{server=\"tls://{tls_addr}\",outcome=\"failed\"}}");
    let metrics = server.http_addr("metrics");
    eventually("both refused handshakes to be counted", || {
        metric(&http_get(metrics, "/metrics").1, &failed) == 2.0
    });
}

#[test]
fn slow_broken_and_plain_handshakes_are_closed_and_udp_goes_on() {
    let pki = Pki::new("tls-slow", "kubewire-test-ca");
    pki.write_serving("first");
    let (mut server, tls_addr) = serve_tls(
        &pki,
        &[
            "--tls-handshake-timeout-ms",
            "300",
            "--tcp-max-connections",
            "40",
        ],
    );
    // Slowloris: connected, never a byte.
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(tls_addr).unwrap())
        .collect();
    // Not TLS at all: plain DNS over TCP to the TLS port.
    let mut plain = TcpStream::connect(tls_addr).unwrap();
    let query = build_query(KUBERNETES, RecordType::A, None);
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    plain.write_all(&framed).unwrap();
    assert_eq!(
        answers(&server.udp(KUBERNETES, RecordType::A)),
        kubernetes_answer()
    );
    let started = Instant::now();
    for mut stream in silent.into_iter().chain([plain]) {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        // Closed by the server (an alert for the plain client, then EOF).
        let mut bytes = 0;
        loop {
            match stream.read(&mut byte) {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes += n,
            }
            assert!(bytes < 100, "the server keeps talking to a non-TLS client");
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the handshakes were not cut at their timeout"
    );
    // The slots are free again: a real client gets in.
    let mut stream = connect(tls_addr, client_config(&pki.ca_file(), None)).unwrap();
    assert_eq!(
        answers(&ask(&mut stream, KUBERNETES, RecordType::A).unwrap()),
        kubernetes_answer()
    );
    let text = metrics_text(&mut server);
    let count = |outcome: &str| {
        metric(
            &text,
            &format!(
                "kubewire_tls_handshakes_total{{server=\"tls://{tls_addr}\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(count("timed_out"), 20.0, "{text}");
    assert_eq!(count("failed"), 1.0, "{text}");
    assert_eq!(count("done"), 1.0, "{text}");
}

#[test]
fn bad_tls_settings_stop_the_start_with_what_to_do() {
    let pki = Pki::new("tls-bad", "kubewire-test-ca");
    pki.write_serving("first");
    let exit = |args: &[&str]| {
        let server = Server::spawn(args, format!("127.0.0.1:{}", free_port()).parse().unwrap());
        let (status, log) = server.wait_exit(Duration::from_secs(10));
        assert!(!status.success(), "{log}");
        log
    };
    let port = free_port().to_string();
    let tls_listen = format!("127.0.0.1:{port}");
    let log = exit(&["--demo", "--tls-listen", &tls_listen]);
    assert!(
        log.contains("tls.cert_file") && log.contains("a certificate is needed"),
        "{log}"
    );
    // A key that is not the certificate's.
    let (_, other_key) = pki.leaf("other", &[SERVER_NAME]);
    let key = pki.dir.join("other.key");
    std::fs::write(&key, other_key).unwrap();
    let cert = pki.dir.join("tls.crt").display().to_string();
    let key = key.display().to_string();
    let log = exit(&[
        "--demo",
        "--tls-listen",
        &tls_listen,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
    ]);
    assert!(
        log.contains("DNS over TLS and HTTPS cannot start")
            && log.contains("is the key the certificate's?"),
        "{log}"
    );
    // A certificate file that is not there.
    let log = exit(&[
        "--demo",
        "--tls-listen",
        &tls_listen,
        "--tls-cert-file",
        "/nonexistent/tls.crt",
        "--tls-key-file",
        &key,
    ]);
    assert!(
        log.contains("tls.cert_file /nonexistent/tls.crt: cannot read it as PEM"),
        "{log}"
    );
}

/// kubewire serving DNS over HTTPS on a free port; returns it and the
/// HTTPS address.
fn serve_https(pki: &Pki, extra: &[&str]) -> (Server, SocketAddr) {
    serve_listening(pki, "--https-listen", extra)
}

/// A query as RFC 8484's GET carries it: base64url without padding.
fn dns_parameter(name: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = build_query(name, RecordType::A, None);
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// curl against kubewire's HTTPS address, as `https://dns.example:PORT`;
/// returns the status code, the headers (lowercase) and the body.
fn curl(https_addr: SocketAddr, pki: &Pki, args: &[&str], path: &str) -> (u16, String, Vec<u8>) {
    let dir = tempdir("curl");
    let output = Command::new("curl")
        .args(["-s", "--max-time", "5", "--cacert"])
        .arg(pki.ca_file())
        .arg("--resolve")
        .arg(format!("{SERVER_NAME}:{}:127.0.0.1", https_addr.port()))
        .arg("-D")
        .arg(dir.join("headers"))
        .args(["-w", "%{http_code}", "-o"])
        .arg(dir.join("body"))
        .args(args)
        .arg(format!("https://{SERVER_NAME}:{}{path}", https_addr.port()))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&output.stdout).parse().unwrap_or(0);
    let headers = std::fs::read_to_string(dir.join("headers")).unwrap_or_default();
    let body = std::fs::read(dir.join("body")).unwrap_or_default();
    (code, headers.to_lowercase(), body)
}

#[test]
fn kdig_and_dig_over_https_get_the_answers_udp_gets() {
    if !tool("kdig", "knot-dnsutils") || !tool("dig", "bind9-dnsutils") {
        return;
    }
    let pki = Pki::new("doh-kdig", "kubewire-test-ca");
    pki.write_serving("first");
    let (mut server, https_addr) = serve_https(&pki, &[]);
    let port = https_addr.port().to_string();
    let ca = format!("+tls-ca={}", pki.ca_file().display());
    let hostname = format!("+tls-hostname={SERVER_NAME}");
    for method in ["+https", "+https-get"] {
        let output = Command::new("kdig")
            .args(["@127.0.0.1", "-p", &port, method, &ca, &hostname])
            .args([KUBERNETES, "A"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("(HTTP/2-"), "{stdout}");
        assert!(stdout.contains("(status: 200)"), "{stdout}");
        assert!(stdout.contains("10.96.0.1"), "{stdout}");
    }
    let output = Command::new("dig")
        .args(["+https", &ca, &hostname, "@127.0.0.1", "-p", &port])
        .args(["+short", KUBERNETES, "A"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "10.96.0.1",
        "{output:?}"
    );
    let text = metrics_text(&mut server);
    let requests = format!(
        "coredns_dns_requests_total{{server=\"https://{https_addr}\",zone=\".\",view=\"\",proto=\"tcp\",family=\"1\",type=\"A\"}}"
    );
    assert_eq!(metric(&text, &requests), 3.0, "{text}");
}

#[test]
fn many_http2_streams_share_one_connection() {
    if !tool("h2load", "nghttp2-client") {
        return;
    }
    let pki = Pki::new("doh-streams", "kubewire-test-ca");
    pki.write_serving("first");
    let (mut server, https_addr) = serve_https(&pki, &["--https-max-streams", "16"]);
    let url = format!(
        "https://{https_addr}/dns-query?dns={}",
        dns_parameter(KUBERNETES)
    );
    // One connection, 16 requests in flight, each on a stream of its own.
    // (A client that opens more streams than the cap before it reads the
    // server's SETTINGS has those refused, as HTTP/2 says.)
    let output = Command::new("h2load")
        .args(["-n", "400", "-c", "1", "-m", "16", &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("400 succeeded, 0 failed"), "{stdout}");
    assert!(stdout.contains("400 2xx"), "{stdout}");
    let text = metrics_text(&mut server);
    let done = format!(
        "kubewire_tls_handshakes_total{{server=\"https://{https_addr}\",outcome=\"done\"}}"
    );
    assert_eq!(metric(&text, &done), 1.0, "{text}");
}

#[test]
fn http_requests_that_are_not_dns_get_their_status_never_a_crash() {
    if !tool("curl", "curl") {
        return;
    }
    let pki = Pki::new("doh-bad", "kubewire-test-ca");
    pki.write_serving("first");
    let (server, https_addr) = serve_https(&pki, &[]);
    let query = dns_parameter(KUBERNETES);

    // HTTP/1.1 and HTTP/2, GET and POST: a reply with its max-age.
    let files = tempdir("doh-bodies");
    let post_body = files.join("query");
    std::fs::write(&post_body, build_query(KUBERNETES, RecordType::A, None)).unwrap();
    let post_body = format!("@{}", post_body.display());
    let dns_message = "content-type: application/dns-message";
    let get = format!("/dns-query?dns={query}");
    let post = |version| vec![version, "-H", dns_message, "--data-binary", &post_body];
    for (args, path) in [
        (vec!["--http1.1"], get.as_str()),
        (vec!["--http2"], get.as_str()),
        (post("--http1.1"), "/dns-query"),
        (post("--http2"), "/dns-query"),
    ] {
        let (code, headers, body) = curl(https_addr, &pki, &args, path);
        assert_eq!(code, 200, "{args:?}: {headers}");
        assert!(
            headers.contains("content-type: application/dns-message"),
            "{headers}"
        );
        assert!(headers.contains("cache-control: max-age=5"), "{headers}");
        assert_eq!(
            answers(&Message::from_vec(&body).unwrap()),
            kubernetes_answer()
        );
    }
    let too_big = files.join("big");
    std::fs::write(&too_big, vec![0u8; 70_000]).unwrap();
    let too_big = format!("@{}", too_big.display());
    let plain = ["-H", "content-type: text/plain", "--data-binary", "x"];
    let response = files.join("response");
    let mut message = build_query(KUBERNETES, RecordType::A, None);
    message[2] |= 0x80;
    std::fs::write(&response, message).unwrap();
    let response = format!("@{}", response.display());
    for (args, path, want) in [
        (vec![], "/dns-query", 400),
        (vec![], "/dns-query?dns=!!!", 400),
        (vec![], "/dns-query?dns=AAAA", 400),
        (vec![], "/other", 404),
        (vec!["-X", "PUT"], "/dns-query", 405),
        (plain.to_vec(), "/dns-query", 415),
        (
            vec!["-H", dns_message, "--data-binary", &too_big],
            "/dns-query",
            413,
        ),
        (
            vec!["-H", dns_message, "--data-binary", "xyz"],
            "/dns-query",
            400,
        ),
        // A whole message, but a response (QR set), not a query.
        (
            vec!["-H", dns_message, "--data-binary", &response],
            "/dns-query",
            400,
        ),
    ] {
        let (code, headers, _) = curl(https_addr, &pki, &args, path);
        assert_eq!(code, want, "{args:?} {path}: {headers}");
    }
    assert_eq!(
        answers(&server.udp(KUBERNETES, RecordType::A)),
        kubernetes_answer()
    );
}

/// Reads until the server closes `stream`; how long that took.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    stream.set_read_timeout(Some(limit)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(error) => panic!("not closed within {limit:?}: {error}"),
        }
    }
}

#[test]
fn a_busy_connection_is_driven_while_others_are_accepted_answered_and_timed_out() {
    busy_connection_is_driven("batched");
}

#[test]
fn a_busy_connection_is_driven_by_the_io_uring_path_too() {
    busy_connection_is_driven("io_uring");
}

fn busy_connection_is_driven(udp_io: &str) {
    // One core. A DoT connection asking without pause keeps the core's UDP
    // loop polling the connections itself (not glommio's reactor). Meanwhile
    // UDP, a new plain TCP connection and a new DoT connection are answered;
    // a silent connection is cut at the handshake timeout and an idle one at
    // the idle timeout (timers still fire); when the busy connection stops,
    // the core goes back to the reactor, and a query after the pause is
    // answered.
    let pki = Pki::new(&format!("tls-driven-{udp_io}"), "kubewire-test-ca");
    pki.write_serving("first");
    let (mut server, tls_addr) = serve_tls(
        &pki,
        &[
            "--cores",
            "1",
            "--tls-handshake-timeout-ms",
            "300",
            "--tcp-idle-timeout-ms",
            "500",
            "--udp-io",
            udp_io,
        ],
    );
    let config = client_config(&pki.ca_file(), None);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let mut stream = connect(tls_addr, Arc::clone(&config)).unwrap();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut asked = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let known = asked.is_multiple_of(2);
                let name = if known {
                    KUBERNETES.to_string()
                } else {
                    format!("nope{asked}.default.svc.cluster.local")
                };
                let reply = ask(&mut stream, &name, RecordType::A).unwrap();
                assert_eq!(reply.queries[0].name().to_string(), format!("{name}."));
                assert_eq!(rcode(&reply), if known { 0 } else { 3 });
                asked += 1;
            }
            (asked, stream)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut silent = TcpStream::connect(tls_addr).unwrap();
    let mut idle = connect(tls_addr, Arc::clone(&config)).unwrap();
    assert_eq!(
        answers(&ask(&mut idle, KUBERNETES, RecordType::A).unwrap()),
        kubernetes_answer()
    );
    for _ in 0..20 {
        assert_eq!(
            answers(&server.udp(KUBERNETES, RecordType::A)),
            kubernetes_answer()
        );
        assert_eq!(
            answers(&server.tcp(KUBERNETES, RecordType::A)),
            kubernetes_answer()
        );
    }
    let cut = closed_within(&mut silent, Duration::from_secs(3));
    assert!(cut < Duration::from_secs(2), "handshake cut after {cut:?}");
    let cut = closed_within(&mut idle.sock, Duration::from_secs(3));
    assert!(
        cut < Duration::from_secs(2),
        "idle connection cut after {cut:?}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (asked, mut stream) = busy.join().unwrap();
    assert!(
        asked > 100,
        "the busy connection asked only {asked} queries"
    );
    let text = metrics_text(&mut server);
    // The one core's series, whichever CPU it runs on.
    let driven: f64 = text
        .lines()
        .filter(|line| line.starts_with("kubewire_core_driven_stream_wakes_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        driven >= f64::from(asked) / 10.0,
        "{driven} of {asked} queries woken by the core's own poll"
    );
    // Quiet now: the connection waits on the reactor again, and is woken.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        answers(&ask(&mut stream, KUBERNETES, RecordType::A).unwrap()),
        kubernetes_answer()
    );
}

#[test]
fn hickorys_own_clients_over_tls_and_https_get_the_answers_udp_gets() {
    use hickory_net::xfer::{DnsHandle, FirstAnswer};
    use hickory_proto::op::{DnsRequest, DnsRequestOptions, Query};
    use hickory_proto::rr::Name;

    let pki = Pki::new("tls-hickory", "kubewire-test-ca");
    pki.write_serving("first");
    let https_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (server, tls_addr) = serve_tls(&pki, &["--https-listen", &https_addr.to_string()]);
    let names = [
        (KUBERNETES, RecordType::A),
        ("nope.default.svc.cluster.local", RecordType::A),
        (KUBERNETES, RecordType::AAAA),
    ];
    let over_udp: Vec<(u16, Vec<String>)> = names
        .iter()
        .map(|(name, qtype)| {
            let reply = server.udp(name, *qtype);
            (rcode(&reply), answers(&reply))
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Its background tasks live as long as a clone of it does.
        let provider = hickory_net::runtime::TokioRuntimeProvider::new();
        let dot = hickory_net::tls::tls_exchange(
            tls_addr,
            rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap(),
            (*client_config(&pki.ca_file(), None)).clone(),
            Duration::from_secs(5),
            None,
            provider.clone(),
        )
        .await
        .expect("hickory's DoT client connects");
        let doh = hickory_net::h2::HttpsClientStream::builder(
            client_config_alpn(&pki.ca_file(), b"h2"),
            provider.clone(),
        )
        .exchange(https_addr, Arc::from(SERVER_NAME), Arc::from("/dns-query"))
        .await
        .expect("hickory's DoH client connects");
        for ((name, qtype), expected) in names.iter().zip(&over_udp) {
            let request = || {
                DnsRequest::from_query(
                    Query::query(Name::from_ascii(name).unwrap(), *qtype),
                    DnsRequestOptions::default(),
                )
            };
            for (protocol, reply) in [
                ("DoT", dot.send(request()).first_answer().await),
                ("DoH", doh.send(request()).first_answer().await),
            ] {
                let reply = reply.unwrap_or_else(|e| panic!("{protocol} {name}: {e}"));
                assert_eq!(
                    &(rcode(&reply), answers(&reply)),
                    expected,
                    "{protocol} {name} {qtype}"
                );
            }
        }
    });
}
