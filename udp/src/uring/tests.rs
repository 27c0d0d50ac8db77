//! The ring against real sockets on loopback.

use super::*;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

fn echo_turns(ring: &mut UdpRing, want: usize) -> usize {
    let mut answered = 0;
    for _ in 0..200 {
        ring.submit_and_wait(Some(Duration::from_millis(10)))
            .unwrap();
        let turn = ring
            .process(|query, out, peer| {
                assert!(peer.address().is_some());
                out[..query.len()].copy_from_slice(query);
                out[0] ^= 0xff;
                Some(query.len())
            })
            .unwrap();
        answered += turn.replied;
        if answered >= want {
            ring.flush().unwrap();
            break;
        }
    }
    answered
}

#[test]
fn a_ring_answers_each_datagram_to_its_sender_across_buffer_exhaustion() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let options = Options {
        receive_buffers: 4,
        send_slots: 8,
        ..Options::default()
    };
    let mut ring = UdpRing::new(&server, options).unwrap();
    let clients: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    clients
        .iter()
        .for_each(|c| c.set_read_timeout(Some(Duration::from_secs(2))).unwrap());
    // More datagrams than receive buffers: the receive runs dry and is re-armed.
    let rounds = 5;
    for round in 0..rounds {
        for (i, client) in clients.iter().enumerate() {
            client
                .send_to(&[i as u8, round as u8, 7], server.local_addr().unwrap())
                .unwrap();
        }
    }
    assert_eq!(
        echo_turns(&mut ring, rounds * clients.len()),
        rounds * clients.len()
    );
    for (i, client) in clients.iter().enumerate() {
        for round in 0..rounds {
            let mut buf = [0u8; 16];
            let (len, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(from, server.local_addr().unwrap());
            assert_eq!(&buf[..len], &[(i as u8) ^ 0xff, round as u8, 7]);
        }
    }
    let stats = ring.stats();
    assert_eq!(stats.received, (rounds * clients.len()) as u64);
    assert_eq!(stats.send_errors, 0);
    assert!(stats.rearmed >= 1, "{stats:?}");
}

#[test]
fn a_parked_ring_signals_its_eventfd_when_a_datagram_arrives() {
    let server = UdpSocket::bind("[::1]:0").unwrap();
    let mut ring = UdpRing::new(&server, Options::default()).unwrap();
    let fd = ring.notifier().unwrap();
    assert!(ring.park().unwrap(), "nothing waits yet");
    let client = UdpSocket::bind("[::1]:0").unwrap();
    client
        .send_to(b"hello", server.local_addr().unwrap())
        .unwrap();
    let mut count = [0u8; 8];
    // SAFETY: reads 8 bytes into a local array from the ring's eventfd.
    let read = unsafe { libc::read(fd, count.as_mut_ptr().cast(), 8) };
    assert_eq!(read, 8);
    ring.unpark();
    assert_eq!(echo_turns(&mut ring, 1), 1);
    let mut buf = [0u8; 16];
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (len, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"\x97ello");
}

#[test]
fn a_watched_socket_receives_and_sends_through_the_ring_until_unwatched() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let options = Options {
        watched_buffers: 4,
        ..Options::default()
    };
    let mut ring = UdpRing::new(&server, options).unwrap();
    let upstream_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    upstream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let watch = ring.watch(upstream_socket.as_raw_fd()).unwrap();
    assert_eq!(ring.watching(), 1);

    // A send on the watched socket, through the ring.
    let (to, to_len) = crate::socket_address(upstream.local_addr().unwrap());
    assert!(ring.send_to(upstream_socket.as_raw_fd(), b"query", &to, to_len));
    ring.flush().unwrap();
    let mut buf = [0u8; 16];
    let (len, from) = upstream.recv_from(&mut buf).unwrap();
    assert_eq!(
        (&buf[..len], from),
        (&b"query"[..], upstream_socket.local_addr().unwrap())
    );

    // More replies than buffers, and one longer than a buffer.
    for i in 0..6u8 {
        upstream.send_to(&[i; 3], from).unwrap();
    }
    upstream
        .send_to(&vec![9u8; WATCHED_BUFFER_LEN], from)
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..200 {
        ring.submit_and_wait(Some(Duration::from_millis(10)))
            .unwrap();
        ring.process_with(
            |_, _, _, _| None,
            |w, bytes, truncated, peer| {
                assert_eq!(w, watch);
                assert_eq!(peer.address(), Some(upstream.local_addr().unwrap()));
                got.push((bytes.to_vec(), truncated));
            },
        )
        .unwrap();
        if got.len() == 7 {
            break;
        }
    }
    assert_eq!(got.len(), 7, "{got:?}");
    for (i, (bytes, truncated)) in got[..6].iter().enumerate() {
        assert_eq!((bytes.as_slice(), *truncated), (&[i as u8; 3][..], false));
    }
    assert!(
        got[6].1,
        "a datagram longer than a buffer is marked truncated"
    );

    // Unwatched: nothing more is handed on.
    ring.unwatch(watch);
    assert_eq!(ring.watching(), 0);
    ring.flush().unwrap();
    ring.process_with(|_, _, _, _| None, |_, _, _, _| panic!("unwatched"))
        .unwrap();
    upstream.send_to(b"late", from).unwrap();
    for _ in 0..5 {
        ring.submit_and_wait(Some(Duration::from_millis(10)))
            .unwrap();
        ring.process_with(|_, _, _, _| None, |_, _, _, _| panic!("unwatched"))
            .unwrap();
    }
    // The slot is free for the next socket.
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(ring.watch(other.as_raw_fd()), Some(watch));
}

#[test]
fn a_burst_bigger_than_the_send_slots_is_answered_whole() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let options = Options {
        send_slots: 2,
        ..Options::default()
    };
    let mut ring = UdpRing::new(&server, options).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    for i in 0..10u8 {
        client.send_to(&[i], server.local_addr().unwrap()).unwrap();
    }
    // All ten arrive before the first turn: two take the slots, the rest
    // go out at once.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(echo_turns(&mut ring, 10), 10);
    let mut got: Vec<u8> = (0..10)
        .map(|_| {
            let mut buf = [0u8; 4];
            client.recv_from(&mut buf).unwrap();
            buf[0] ^ 0xff
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
    let stats = ring.stats();
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert!(stats.sent_directly >= 8, "{stats:?}");
}

#[test]
fn a_datagram_longer_than_a_buffer_is_dropped_and_counted() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut ring = UdpRing::new(&server, Options::default()).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .send_to(&[1u8; RECEIVE_BUFFER_LEN], server.local_addr().unwrap())
        .unwrap();
    client.send_to(b"ok", server.local_addr().unwrap()).unwrap();
    assert_eq!(echo_turns(&mut ring, 1), 1);
    assert_eq!(ring.stats().dropped, 1);
}

#[test]
fn a_watched_descriptor_is_reported_readable_until_unwatched() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut ring = UdpRing::new(&server, Options::default()).unwrap();
    let (reader, writer) = std::os::unix::net::UnixDatagram::pair().unwrap();
    reader.set_nonblocking(true).unwrap();
    let readable_turn = |ring: &mut UdpRing| {
        ring.submit_and_wait(Some(Duration::from_millis(20)))
            .unwrap();
        ring.process(|_, _, _| None).unwrap().readable
    };
    ring.watch_readable(reader.as_raw_fd());
    assert!(!readable_turn(&mut ring), "nothing written yet");
    for round in 0..3u8 {
        writer.send(&[round]).unwrap();
        assert!(readable_turn(&mut ring), "round {round}");
        let mut buf = [0u8; 4];
        assert_eq!(reader.recv(&mut buf).unwrap(), 1);
    }
    ring.unwatch_readable();
    ring.flush().unwrap();
    ring.process(|_, _, _| None).unwrap();
    writer.send(b"x").unwrap();
    assert!(!readable_turn(&mut ring), "unwatched");
}

#[test]
fn a_ring_answers_on_every_socket_it_listens_on_from_that_socket() {
    let first = UdpSocket::bind("127.0.0.1:0").unwrap();
    let second = UdpSocket::bind("127.0.0.2:0").unwrap();
    let options = Options {
        receive_buffers: 4,
        ..Options::default()
    };
    let mut ring = UdpRing::new(&first, options).unwrap();
    assert_eq!(ring.listen_also(&second), 1);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let servers = [first.local_addr().unwrap(), second.local_addr().unwrap()];
    // More datagrams than buffers, to both: each receive runs dry and is
    // re-armed on its own socket.
    let rounds = 6u8;
    for round in 0..rounds {
        for (i, server) in servers.iter().enumerate() {
            client.send_to(&[i as u8, round], server).unwrap();
        }
    }
    let want = usize::from(rounds) * servers.len();
    let mut answered = 0;
    for _ in 0..200 {
        ring.submit_and_wait(Some(Duration::from_millis(10)))
            .unwrap();
        let turn = ring
            .process_with(
                |listen, query, out, _| {
                    // The reply says which socket the ring saw the query on.
                    out[0] = query[0];
                    out[1] = query[1];
                    out[2] = listen as u8;
                    Some(3)
                },
                |_, _, _, _| {},
            )
            .unwrap();
        answered += turn.replied;
        if answered >= want {
            ring.flush().unwrap();
            break;
        }
    }
    assert_eq!(answered, want);
    for _ in 0..want {
        let mut buf = [0u8; 8];
        let (len, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(len, 3);
        let asked = usize::from(buf[0]);
        assert_eq!(usize::from(buf[2]), asked, "the index of the socket asked");
        assert_eq!(
            from, servers[asked],
            "the reply leaves from the socket asked"
        );
    }
    assert!(ring.stats().rearmed >= 2, "{:?}", ring.stats());
}
