//! End to end: malformed datagrams and hostile TCP clients. Afterwards the
//! server still answers correctly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hickory_proto::rr::RecordType;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

fn still_answers(server: &Server) {
    let udp = server.udp("kubernetes.default.svc.cluster.local", RecordType::A);
    assert_eq!(
        answers(&udp),
        ["kubernetes.default.svc.cluster.local. A 10.96.0.1"]
    );
    let tcp = server.tcp("kubernetes.default.svc.cluster.local", RecordType::A);
    assert_eq!(
        answers(&tcp),
        ["kubernetes.default.svc.cluster.local. A 10.96.0.1"]
    );
}

/// Whether the server closes (FIN) or resets the connection within
/// `timeout`. A read timeout, or data, is not a close: a connection left
/// open must fail the test.
fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // Bytes before the close (a reply) are read past.
            Ok(_) if started.elapsed() < timeout => continue,
            Ok(_) => return false,
            Err(error) => {
                return matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                );
            }
        }
    }
}

#[test]
fn malformed_datagrams() {
    let server = Server::start(&["--demo", "--cores", "2"]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let good = build_query("kubernetes.default.svc.cluster.local", RecordType::A, None);

    // Garbage of every length, a response, a cut query: no reply, no crash.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in 0..300 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        socket.send_to(&bytes, server.addr).unwrap();
    }
    let mut response = good.clone();
    response[2] |= 0x80;
    socket.send_to(&response, server.addr).unwrap();
    socket.send_to(&good[..20], server.addr).unwrap();
    socket.send_to(&vec![0u8; 9000], server.addr).unwrap();

    // A response gets no reply.
    let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
    quiet
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    quiet.send_to(&response, server.addr).unwrap();
    assert!(
        quiet.recv_from(&mut [0u8; 512]).is_err(),
        "a response must not be answered"
    );

    // A query with two questions: FORMERR.
    let mut two = good.clone();
    two[5] = 2;
    let reply = udp_exchange(&quiet, server.addr, &two).expect("FORMERR reply");
    assert_eq!(reply[3] & 0x0F, 1, "FORMERR");
    // Opcode NOTIFY: NOTIMP. Class CH: REFUSED.
    let mut notify = good.clone();
    notify[2] = (notify[2] & 0x87) | (4 << 3);
    assert_eq!(
        udp_exchange(&quiet, server.addr, &notify).unwrap()[3] & 0x0F,
        4
    );
    let mut chaos = good.clone();
    let at = chaos.len() - 1;
    chaos[at] = 3;
    assert_eq!(
        udp_exchange(&quiet, server.addr, &chaos).unwrap()[3] & 0x0F,
        5
    );

    still_answers(&server);
}

#[test]
fn hostile_tcp_clients_cannot_stall_the_server() {
    let server = Server::start(&["--demo", "--cores", "1", "--tcp-idle-timeout-ms", "500"]);

    // A huge length prefix and nothing after it.
    let mut huge = TcpStream::connect(server.addr).unwrap();
    huge.write_all(&[0xff, 0xff]).unwrap();
    // A byte a second.
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(&[0x00]).unwrap();
    // Garbage framed as a query.
    let mut garbage = TcpStream::connect(server.addr).unwrap();
    garbage.write_all(&[0x00, 0x05, 1, 2, 3, 4, 5]).unwrap();
    // Several pipelined queries on one connection, answered in order.
    let mut pipelined = TcpStream::connect(server.addr).unwrap();
    pipelined
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let names = [
        "kubernetes.default.svc.cluster.local",
        "web.default.svc.cluster.local",
        "api.default.svc.cluster.local",
    ];
    let mut batch = Vec::new();
    for name in names {
        let query = build_query(name, RecordType::A, None);
        batch.extend_from_slice(&(query.len() as u16).to_be_bytes());
        batch.extend_from_slice(&query);
    }
    pipelined.write_all(&batch).unwrap();
    for name in names {
        let mut len = [0u8; 2];
        pipelined.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        pipelined.read_exact(&mut reply).unwrap();
        let message = hickory_proto::op::Message::from_vec(&reply).unwrap();
        assert_eq!(message.queries[0].name().to_ascii(), format!("{name}."));
    }

    // Meanwhile the server answers everyone else.
    still_answers(&server);

    // The slow client is cut off: its query never completes in time.
    slow.write_all(&[0x20]).unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(4)),
        "the slow client is disconnected"
    );
    // The huge prefix is refused at once; the garbage connection is closed.
    assert!(
        closed_within(&mut huge, Duration::from_secs(1)),
        "a 65535-byte length prefix closes the connection"
    );
    assert!(
        closed_within(&mut garbage, Duration::from_secs(1)),
        "garbage closes the connection"
    );
    still_answers(&server);
}

#[test]
fn a_thousand_idle_connections() {
    let server = Server::start(&["--demo", "--cores", "2", "--tcp-idle-timeout-ms", "1500"]);
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // Still answering over UDP and over a new TCP connection.
    still_answers(&server);
    // Idle connections are closed after the idle timeout.
    std::thread::sleep(Duration::from_millis(2500));
    let mut closed = 0;
    for mut stream in idle {
        if closed_within(&mut stream, Duration::from_millis(200)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 1000);
    still_answers(&server);
}

#[test]
fn connections_over_the_cap_are_closed_and_others_still_served() {
    let server = Server::start(&["--demo", "--cores", "1", "--tcp-max-connections", "4"]);
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(server.addr).unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(3)),
        "over the cap: closed"
    );
    // The held ones stay open.
    let mut first = held.into_iter().next().unwrap();
    assert!(
        !closed_within(&mut first, Duration::from_millis(300)),
        "under the cap: open"
    );
    drop(first);
    std::thread::sleep(Duration::from_millis(200));
    still_answers(&server);
}
