//! Checks before any core starts, so that a failure names its cause and its
//! fix instead of surfacing as a panic inside an executor thread.
#![allow(unsafe_code)] // io_uring_setup and getifaddrs

use crate::operations::config::CoreSpec;

use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

/// A startup failure, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// io_uring cannot be used.
    #[error(
        "io_uring is not available ({0}): kubewire's cores run on io_uring. \
         Allow io_uring_setup, io_uring_enter and io_uring_register in the seccomp profile \
         (the Localhost profile deploy/seccomp/kubewire-io-uring.json is RuntimeDefault plus those three; \
         or `securityContext.seccompProfile.type: Unconfined`), \
         and check that sysctl kernel.io_uring_disabled is 0"
    )]
    IoUring(std::io::Error),
    /// RLIMIT_MEMLOCK too low.
    #[error(
        "RLIMIT_MEMLOCK is {have_kib} KiB, but {need_kib} KiB are needed to register io_uring buffers \
         for {cores} cores: raise it (`ulimit -l {need_kib}`, docker `--ulimit memlock={need_bytes}`, \
         or LimitMEMLOCK= in a systemd unit)"
    )]
    MemLock {
        /// What the limit is.
        have_kib: u64,
        /// What is needed.
        need_kib: u64,
        /// The same, in bytes.
        need_bytes: u64,
        /// Serving cores.
        cores: usize,
    },
    /// A CPU that cannot be used.
    #[error("--cores {spec:?}: {problem}; this process may use CPUs {allowed}")]
    Cpu {
        /// What was asked for.
        spec: String,
        /// What is wrong with it.
        problem: String,
        /// The CPUs in the affinity mask.
        allowed: String,
    },
    /// A listen address that cannot be bound.
    #[error("cannot listen on {proto} {addr}: {problem}")]
    Bind {
        /// UDP or TCP.
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What is wrong, and the fix.
        problem: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// glommio's floor for the memlock limit, and what each core registers
/// (3 rings × our 64 KiB `io_memory`).
/// How long a serving core may sleep in `recvmmsg` while traffic flows,
/// before it goes back to waiting on its reactor: set here as each UDP
/// socket's `SO_RCVTIMEO`; also the io_uring path's tick.
pub const UDP_FLOWING_WAIT_MS: u64 = 1;

const MEMLOCK_FLOOR_BYTES: u64 = 512 << 10;
const MEMLOCK_PER_CORE_BYTES: u64 = 3 * (64 << 10);

/// Checks that io_uring can be set up, by creating (and, on drop, closing)
/// a tiny ring.
pub fn check_io_uring() -> Result<(), StartupError> {
    let mut params = rustix::io_uring::io_uring_params::default();
    // SAFETY: `params` is a valid, zero-flag io_uring_params; the ring is
    // never mapped, and its fd is closed when the OwnedFd drops.
    unsafe { rustix::io_uring::io_uring_setup(4, &mut params) }
        .map(drop)
        .map_err(|errno| StartupError::IoUring(errno.into()))
}

/// Checks the memlock limit against what `cores` executors register.
pub fn check_memlock(cores: usize) -> Result<(), StartupError> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Memlock);
    let need = MEMLOCK_FLOOR_BYTES.max(MEMLOCK_PER_CORE_BYTES * cores as u64);
    // `None` is no limit.
    if let Some(have) = limit.current
        && have < need
    {
        return Err(StartupError::MemLock {
            have_kib: have / 1024,
            need_kib: need / 1024,
            need_bytes: need,
            cores,
        });
    }
    Ok(())
}

/// The CPUs in this process's affinity mask.
pub fn allowed_cpus() -> Vec<usize> {
    let Ok(set) = rustix::thread::sched_getaffinity(None) else {
        return vec![0];
    };
    (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .collect()
}

fn describe(cpus: &[usize]) -> String {
    cpus.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Resolves `dns.cores` against the CPUs this process may use: `all`
/// is every one; a count, that many of them; a list, exactly those, each of
/// which must be allowed.
pub fn choose_cpus(spec: &CoreSpec, allowed: &[usize]) -> Result<Vec<usize>, StartupError> {
    let error = |problem: String| StartupError::Cpu {
        spec: spec.to_string(),
        problem,
        allowed: describe(allowed),
    };
    match spec {
        CoreSpec::All => Ok(allowed.to_vec()),
        CoreSpec::Count(count) if *count > allowed.len() => Err(error(format!(
            "{count} cores asked for, but only {} CPUs are allowed",
            allowed.len()
        ))),
        CoreSpec::Count(count) => Ok(allowed[..*count].to_vec()),
        CoreSpec::List(cpus) => {
            if let Some(cpu) = cpus.iter().find(|cpu| !allowed.contains(cpu)) {
                return Err(error(format!(
                    "CPU {cpu} does not exist or is not in this process's affinity mask"
                )));
            }
            Ok(cpus.clone())
        }
    }
}

fn bind_problem(error: &std::io::Error, addr: SocketAddr) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "the port is in use by another process; stop it (`ss -lupn 'sport = :{}'` shows it) or choose another --listen",
            addr.port()
        ),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE".into()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "no interface has this address; use an address of this host, or 0.0.0.0".into()
        }
        // The system's error follows, as the source.
        _ => "the system refused it".into(),
    }
}

/// Whether a UDP socket of another process serves `addr` (bound to it, or
/// to the wildcard on its port), from `/proc/net/udp{,6}` less this
/// process's own sockets. An HA pair's instance asks it at start (the
/// other serves: share the address) and at exit (the other still serves:
/// leave it the interface); a bind cannot tell at exit, as this process's
/// own sockets stay open until it ends.
pub fn udp_served_by_others(addr: SocketAddr) -> bool {
    let ours = own_socket_inodes();
    let (table, wanted) = match addr.ip() {
        std::net::IpAddr::V4(ip) => (
            "/proc/net/udp",
            [ip.octets().to_vec(), vec![0; 4]].map(|octets| proc_net_address(&octets, addr.port())),
        ),
        std::net::IpAddr::V6(ip) => (
            "/proc/net/udp6",
            [ip.octets().to_vec(), vec![0; 16]]
                .map(|octets| proc_net_address(&octets, addr.port())),
        ),
    };
    let Ok(text) = std::fs::read_to_string(table) else {
        return false;
    };
    text.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
            return false;
        };
        wanted.iter().any(|w| w.eq_ignore_ascii_case(local))
            && inode
                .parse::<u64>()
                .is_ok_and(|i| i != 0 && !ours.contains(&i))
    })
}

/// An address as `/proc/net/udp` writes it: each 32-bit word of the
/// address in host order, in hex, then the port.
fn proc_net_address(octets: &[u8], port: u16) -> String {
    let mut text = String::new();
    for word in octets.chunks(4) {
        let bytes: [u8; 4] = [word[0], word[1], word[2], word[3]];
        text.push_str(&format!("{:08X}", u32::from_ne_bytes(bytes)));
    }
    format!("{text}:{port:04X}")
}

/// Inodes of this process's sockets, from `/proc/self/fd`.
fn own_socket_inodes() -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.ok()?.path()).ok()?;
            let text = target.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Checks that nobody else holds the address: a plain bind, without
/// `SO_REUSEPORT`, which would otherwise let a second server silently share it.
pub fn check_free(addr: SocketAddr) -> Result<(), StartupError> {
    for (proto, kind) in [("UDP", Type::DGRAM), ("TCP", Type::STREAM)] {
        let socket =
            Socket::new(Domain::for_address(addr), kind, None).map_err(|e| StartupError::Bind {
                proto,
                addr,
                problem: "the socket cannot be created".into(),
                source: e,
            })?;
        if kind == Type::STREAM {
            // TIME_WAIT leftovers of our own last run must not block a restart.
            let _ = socket.set_reuse_address(true);
        }
        socket.bind(&addr.into()).map_err(|e| StartupError::Bind {
            proto,
            addr,
            problem: bind_problem(&e, addr),
            source: e,
        })?;
    }
    Ok(())
}

/// One core's UDP socket for `addr`, with `SO_REUSEPORT`; bound at once,
/// or left for [`bind_late`] when `bind_now` is false.
pub fn udp_socket(addr: SocketAddr, bind_now: bool) -> Result<OwnedFd, StartupError> {
    let bind = |e: std::io::Error| StartupError::Bind {
        proto: "UDP",
        addr,
        problem: bind_problem(&e, addr),
        source: e,
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(bind)?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(true);
    }
    socket.set_reuse_port(true).map_err(bind)?;
    // Large buffers absorb bursts; the kernel caps them at rmem_max/wmem_max.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    // Bounds how long a core sleeps in recvmmsg once traffic stops (see serving/cores/udp.rs).
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(UDP_FLOWING_WAIT_MS)))
        .map_err(bind)?;
    if bind_now {
        socket.bind(&addr.into()).map_err(bind)?;
    }
    Ok(socket.into())
}

/// One core's TCP listener for `addr`, with `SO_REUSEPORT`; bound and
/// listening at once, or left for [`bind_late`] when `bind_now` is false.
pub fn tcp_listener(addr: SocketAddr, bind_now: bool) -> Result<OwnedFd, StartupError> {
    let bind = |e: std::io::Error| StartupError::Bind {
        proto: "TCP",
        addr,
        problem: bind_problem(&e, addr),
        source: e,
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(bind)?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(true);
    }
    socket.set_reuse_address(true).map_err(bind)?;
    socket.set_reuse_port(true).map_err(bind)?;
    if bind_now {
        socket.bind(&addr.into()).map_err(bind)?;
        socket.listen(1024).map_err(bind)?;
    }
    Ok(socket.into())
}

/// Binds a socket [`udp_socket`] or [`tcp_listener`] left unbound (and
/// listens, for TCP).
pub fn bind_late(fd: &OwnedFd, addr: SocketAddr, tcp: bool) -> Result<(), StartupError> {
    let bind = |e: std::io::Error| StartupError::Bind {
        proto: if tcp { "TCP" } else { "UDP" },
        addr,
        problem: bind_problem(&e, addr),
        source: e,
    };
    let socket = socket2::SockRef::from(fd);
    socket.bind(&addr.into()).map_err(bind)?;
    if tcp {
        socket.listen(1024).map_err(bind)?;
    }
    Ok(())
}

/// This server's own addresses, for `ns.dns.<zone>` (as CoreDNS): the
/// `POD_IPS` or `POD_IP` environment variable (the downward API's
/// `status.podIPs` / `status.podIP`), else every address of the host's
/// interfaces but loopback and link-local.
pub fn own_addresses() -> Vec<std::net::IpAddr> {
    let from_env = std::env::var("POD_IPS")
        .or_else(|_| std::env::var("POD_IP"))
        .unwrap_or_default();
    let mut ips: Vec<std::net::IpAddr> = from_env
        .split(',')
        .filter_map(|ip| ip.trim().parse().ok())
        .collect();
    if ips.is_empty() {
        ips = interface_addresses();
    }
    ips.sort();
    ips.dedup();
    ips
}

fn interface_addresses() -> Vec<std::net::IpAddr> {
    use std::net::IpAddr;
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    let mut ips = Vec::new();
    let mut node = list;
    while !node.is_null() {
        // SAFETY: `node` is an element of the list getifaddrs returned,
        // not yet freed.
        let entry = unsafe { &*node };
        node = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: `ifa_addr` points at a sockaddr whose family says which
        // sockaddr type it is.
        let ip: Option<IpAddr> = unsafe {
            match i32::from((*entry.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let v4 = &*entry.ifa_addr.cast::<libc::sockaddr_in>();
                    Some(std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)).into())
                }
                libc::AF_INET6 => {
                    let v6 = &*entry.ifa_addr.cast::<libc::sockaddr_in6>();
                    Some(std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr).into())
                }
                _ => None,
            }
        };
        let usable = |ip: &IpAddr| match ip {
            IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
            IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local(),
        };
        if let Some(ip) = ip.filter(usable) {
            ips.push(ip);
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_specs() {
        let allowed = [0, 1, 2, 3];
        let spec = |text: &str| text.parse::<CoreSpec>().unwrap();
        assert_eq!(
            choose_cpus(&spec("all"), &allowed).unwrap(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(choose_cpus(&spec("2"), &allowed).unwrap(), vec![0, 1]);
        assert_eq!(
            choose_cpus(&spec("0,2-3"), &allowed).unwrap(),
            vec![0, 2, 3]
        );
        assert_eq!(choose_cpus(&spec("1-1"), &allowed).unwrap(), vec![1]);
        let error = choose_cpus(&spec("0,7"), &allowed).unwrap_err().to_string();
        assert_eq!(
            error,
            "--cores \"0,7\": CPU 7 does not exist or is not in this process's affinity mask; this process may use CPUs 0,1,2,3"
        );
        assert!(
            choose_cpus(&spec("9"), &allowed)
                .unwrap_err()
                .to_string()
                .contains("only 4 CPUs")
        );
        assert!("x".parse::<CoreSpec>().is_err());
        assert!("0".parse::<CoreSpec>().is_err());
        assert!("3-1".parse::<CoreSpec>().is_err());
        // What config print writes parses back.
        for text in ["all", "2", "0,2-3", "1-1", "0-3", "5,1"] {
            assert_eq!(
                spec(text).to_string().parse::<CoreSpec>().unwrap(),
                spec(text)
            );
        }
        assert_eq!(spec("1-1").to_string(), "1-1");
        assert_eq!(spec("0,1,2,5").to_string(), "0-2,5");
    }

    #[test]
    fn proc_net_addresses_are_written_as_the_kernel_writes_them() {
        // 169.254.20.10:53, as /proc/net/udp shows it on x86-64.
        assert_eq!(proc_net_address(&[169, 254, 20, 10], 53), "0A14FEA9:0035");
    }

    #[test]
    fn a_socket_of_this_process_is_not_another_instances() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        assert!(!udp_served_by_others(addr));
    }

    #[test]
    fn a_port_in_use_is_named() {
        let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = holder.local_addr().unwrap();
        let error = check_free(addr).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("cannot listen on UDP {addr}: the port is in use")),
            "{error}"
        );
    }
}
