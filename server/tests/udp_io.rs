//! The io_uring UDP path (`dns.udp_io = "io_uring"`) end to end: the real
//! binary on two cores, real sockets, hickory-proto as the client, a
//! scripted upstream for forwarded and cached names, and a seccomp filter
//! that refuses the ring, for the fallback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::upstream::{Behaviour, Upstream};
use common::*;
use hickory_proto::rr::RecordType;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

/// The warning logged once when the ring is refused.
const FALLBACK_LINE: &str = "dns.udp_io = \"io_uring\" is unavailable";

/// Arguments for one core on the io_uring path, forwarding to `to`.
fn one_core_on_the_ring_forwarding_to(to: &str) -> [&str; 7] {
    [
        "--demo",
        "--cores",
        "1",
        "--forward",
        to,
        "--udp-io",
        "io_uring",
    ]
}

/// The server's user and system CPU time so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime is the
    // 12th, stime the 13th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn the_io_uring_path_answers_cluster_forwarded_and_cached_names_and_idles_at_no_cpu() {
    let upstream = Upstream::start();
    upstream.answer("www.example.com", Ipv4Addr::new(192, 0, 2, 80));
    let (_config_dir, config) = config_file("udp-io-config", "[dns]\nudp_io = \"io_uring\"\n");
    let to = upstream.addr.to_string();
    let mut server = Server::start(&[
        "--demo",
        "--cores",
        "2",
        "--forward",
        to.as_str(),
        "--config",
        config.as_str(),
    ]);
    // Many source ports, so that both cores' sockets get queries.
    let clients: Vec<UdpSocket> = (0..16)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (i, client) in clients.iter().enumerate() {
        let name = if i % 2 == 0 {
            "KuBeRnEtEs.default.svc.cluster.local"
        } else {
            "kubernetes.default.svc.cluster.local"
        };
        let reply = udp_query_from(client, server.addr, &build_query(name, RecordType::A, None));
        assert_eq!(rcode(&reply), 0);
        // The client's case comes back in the question and the answer owner.
        assert_eq!(reply.queries[0].name().to_ascii(), format!("{name}."));
        assert_eq!(answers(&reply), [format!("{name}. A 10.96.0.1")]);
    }
    // NXDOMAIN from the table, and a name the table hands to the forwarder.
    assert_eq!(
        rcode(&server.udp("nope.default.svc.cluster.local", RecordType::A)),
        3
    );
    let reply = server.udp("www.example.com", RecordType::A);
    assert_eq!(answers(&reply), ["www.example.com. A 192.0.2.80"]);
    assert_eq!(upstream.names(), ["www.example.com."]);
    // The cache hit rides the same path, from every source port (whichever
    // core it lands on), without another upstream query.
    for client in &clients {
        let query = build_query("WWW.example.com", RecordType::A, None);
        let reply = udp_query_from(client, server.addr, &query);
        assert_eq!(answers(&reply), ["WWW.example.com. A 192.0.2.80"]);
    }
    assert_eq!(upstream.names(), ["www.example.com."]);
    // TCP is unchanged.
    assert_eq!(
        answers(&server.tcp("kubernetes.default.svc.cluster.local", RecordType::A)),
        ["kubernetes.default.svc.cluster.local. A 10.96.0.1"]
    );
    assert!(
        !server.logged(FALLBACK_LINE, Duration::from_millis(200)),
        "the ring was refused: {:?}",
        server.seen
    );
    // Idle, the cores park on the ring's eventfd: a core polling its ring
    // would burn a whole CPU (100 ticks a second).
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(server.pid());
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(server.pid()) - before;
    assert!(spent < 20, "{spent} ticks of CPU in 2 s idle");
    // And it wakes again.
    assert_eq!(
        rcode(&server.udp("kubernetes.default.svc.cluster.local", RecordType::A)),
        0
    );
}

#[test]
fn a_slow_upstream_reply_is_relayed_while_the_io_uring_path_keeps_answering() {
    // One core: the forwarded query's reply and the cluster answers share
    // its reactor, which the UDP task must not starve while it waits.
    let upstream = Upstream::start();
    upstream.set(Behaviour::Delay(300));
    let to = upstream.addr.to_string();
    let server = Server::start(&one_core_on_the_ring_forwarding_to(&to));
    let slow = UdpSocket::bind("127.0.0.1:0").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let query = build_query("slow.example.com", RecordType::A, None);
    slow.send_to(&query, server.addr).unwrap();
    // Cluster names are answered while the upstream takes its time.
    for _ in 0..20 {
        assert_eq!(
            rcode(&server.udp("kubernetes.default.svc.cluster.local", RecordType::A)),
            0
        );
    }
    let mut buf = [0u8; 1232];
    let len = slow.recv(&mut buf).expect("the forwarded reply within 3 s");
    let reply = hickory_proto::op::Message::from_vec(&buf[..len]).unwrap();
    assert_eq!(answers(&reply), ["slow.example.com. A 192.0.2.1"]);
}

#[cfg(target_arch = "x86_64")]
const LOAD_WORD: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
#[cfg(target_arch = "x86_64")]
const JUMP_IF_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
#[cfg(target_arch = "x86_64")]
const RETURN: u16 = 0x06; // BPF_RET | BPF_K
#[cfg(target_arch = "x86_64")]
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
#[cfg(target_arch = "x86_64")]
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

#[cfg(target_arch = "x86_64")]
fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A classic BPF seccomp filter: `io_uring_register(fd, IORING_REGISTER_PBUF_RING, …)`
/// fails with EPERM, as under a profile that refuses the call; every other
/// call, glommio's own rings included, is allowed.
#[cfg(target_arch = "x86_64")]
fn refuse_buffer_rings() -> std::io::Result<()> {
    const IO_URING_REGISTER: u32 = 427;
    const REGISTER_PBUF_RING: u32 = 22;
    install(&[
        op(LOAD_WORD, 0, 0, 0), // the syscall number
        op(JUMP_IF_EQUAL, 0, 3, IO_URING_REGISTER),
        op(LOAD_WORD, 0, 0, 24), // the low half of its second argument
        op(JUMP_IF_EQUAL, 0, 1, REGISTER_PBUF_RING),
        op(RETURN, 0, 0, SECCOMP_RET_ERRNO | libc::EPERM as u32),
        op(RETURN, 0, 0, SECCOMP_RET_ALLOW),
    ])
}

/// A seccomp filter under which every datagram system call fails with
/// EPERM: `sendto`, `recvfrom`, `sendmsg`, `recvmsg`, `recvmmsg`,
/// and `sendmmsg`. Only io_uring can move a datagram then.
#[cfg(target_arch = "x86_64")]
fn refuse_datagram_calls() -> std::io::Result<()> {
    const REFUSED: [u32; 6] = [44, 45, 46, 47, 299, 307];
    // No allocation: this runs between fork and exec.
    let mut program = [op(RETURN, 0, 0, SECCOMP_RET_ALLOW); REFUSED.len() + 3];
    program[0] = op(LOAD_WORD, 0, 0, 0); // the syscall number
    for (i, &call) in REFUSED.iter().enumerate() {
        // Equal: jump over the remaining tests and the allow, to the refusal.
        program[1 + i] = op(JUMP_IF_EQUAL, (REFUSED.len() - i) as u8, 0, call);
    }
    program[REFUSED.len() + 2] = op(RETURN, 0, 0, SECCOMP_RET_ERRNO | libc::EPERM as u32);
    install(&program)
}

/// Starts kubewire with `args` under the seccomp filter `install_filter`
/// installs (between fork and exec).
#[cfg(target_arch = "x86_64")]
fn start_under(args: &[&str], install_filter: fn() -> std::io::Result<()>) -> Server {
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    Server::spawn_with(args, addr, |command| {
        use std::os::unix::process::CommandExt;
        #[allow(unsafe_code)]
        // SAFETY: the filters only make two prctl calls, which are
        // async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(install_filter)
        };
    })
}

/// Installs a seccomp filter program on the calling thread (and what it
/// runs next).
#[cfg(target_arch = "x86_64")]
fn install(program: &[libc::sock_filter]) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    #[allow(unsafe_code)]
    // SAFETY: prctl with plain integers, and a filter program that lives
    // across the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &raw const fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_kernel_refusing_the_ring_falls_back_to_recvmmsg_with_one_log_line() {
    let mut server = start_under(
        &["--demo", "--cores", "2", "--udp-io", "io_uring"],
        refuse_buffer_rings,
    );
    server.wait_for_log(READY_LINE, Duration::from_secs(20));
    let line = server.wait_for_log(FALLBACK_LINE, Duration::from_secs(5));
    assert!(line.contains("seccomp"), "says why: {line}");
    assert!(line.contains("Operation not permitted"), "{line}");
    assert!(
        line.contains("dns.udp_io = \"batched\""),
        "says what to do: {line}"
    );
    // Both cores' sockets fell back; the line was logged once.
    let clients: Vec<UdpSocket> = (0..16)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for client in &clients {
        let query = build_query("kubernetes.default.svc.cluster.local", RecordType::A, None);
        let reply = udp_query_from(client, server.addr, &query);
        assert_eq!(
            answers(&reply),
            ["kubernetes.default.svc.cluster.local. A 10.96.0.1"]
        );
    }
    // Take in every line logged so far.
    assert!(!server.logged("no such line", Duration::from_millis(300)));
    let fallbacks = server
        .seen
        .iter()
        .filter(|l| l.contains(FALLBACK_LINE))
        .count();
    assert_eq!(fallbacks, 1, "{:?}", server.seen);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_forwarded_miss_on_the_io_uring_path_makes_no_datagram_system_call() {
    // The upstream queries, their replies and the clients' replies all ride
    // on the core's ring: under a filter that refuses every datagram system
    // call, forwarded names are still answered, and cluster names too.
    let upstream = Upstream::start();
    let to = upstream.addr.to_string();
    let mut server = start_under(
        &one_core_on_the_ring_forwarding_to(&to),
        refuse_datagram_calls,
    );
    server.wait_for_log(READY_LINE, Duration::from_secs(20));
    for i in 0..40 {
        let name = format!("ring{i}.example.com");
        let reply = server.udp(&name, RecordType::A);
        assert_eq!(answers(&reply), [format!("{name}. A 192.0.2.1")]);
        assert_eq!(
            answers(&server.udp("kubernetes.default.svc.cluster.local", RecordType::A)),
            ["kubernetes.default.svc.cluster.local. A 10.96.0.1"]
        );
    }
    assert!(upstream.queries() >= 40, "{}", upstream.queries());
    assert!(!server.logged(FALLBACK_LINE, Duration::from_millis(200)));
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_core_with_two_listen_addresses_serves_both_on_its_one_ring() {
    // Node-local mode listens on two addresses. Both are answered through
    // the core's one ring, forwarded names included: under the filter that
    // refuses every datagram system call, a second ring's sockets (or the
    // batched path) could not answer at all.
    let upstream = Upstream::start();
    let to = upstream.addr.to_string();
    let second: std::net::SocketAddr = format!("127.0.0.2:{}", free_port()).parse().unwrap();
    let second_arg = second.to_string();
    let mut args = one_core_on_the_ring_forwarding_to(&to).to_vec();
    args.extend(["--listen", second_arg.as_str()]);
    let mut server = start_under(&args, refuse_datagram_calls);
    server.wait_for_log(READY_LINE, Duration::from_secs(20));
    for i in 0..20 {
        for addr in [server.addr, second] {
            let name = format!("both{i}-{}.example.com", addr.ip());
            let reply = udp_query(addr, &build_query(&name, RecordType::A, None));
            assert_eq!(
                answers(&reply),
                [format!("{name}. A 192.0.2.1")],
                "via {addr}"
            );
            let cluster = build_query("kubernetes.default.svc.cluster.local", RecordType::A, None);
            assert_eq!(
                answers(&udp_query(addr, &cluster)),
                ["kubernetes.default.svc.cluster.local. A 10.96.0.1"],
                "via {addr}"
            );
        }
    }
    assert!(upstream.queries() >= 40, "{}", upstream.queries());
    assert!(!server.logged(FALLBACK_LINE, Duration::from_millis(200)));
}

#[test]
fn a_datagram_the_ring_cannot_take_is_counted_and_the_next_is_answered() {
    let mut server = Server::start(&["--demo", "--cores", "1", "--udp-io", "io_uring"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Longer than the ring's receive buffers (2048 bytes with the sender).
    client.send_to(&[0u8; 3000], server.addr).unwrap();
    let query = build_query("kubernetes.default.svc.cluster.local", RecordType::A, None);
    assert_eq!(
        answers(&udp_query_from(&client, server.addr, &query)),
        ["kubernetes.default.svc.cluster.local. A 10.96.0.1"]
    );
    let (_, body) = http_get(server.http_addr("metrics"), "/metrics");
    let dropped: f64 = body
        .lines()
        .filter(|line| line.starts_with("kubewire_core_udp_ring_dropped_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(dropped, 1.0, "{body}");
}
