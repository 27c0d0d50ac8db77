//! The floor of every comparison: a UDP responder that does no DNS work. It
//! answers each datagram with the datagram itself, QR set, pinned to one
//! CPU. What it costs per query is the kernel's own cost per packet on this
//! machine, by one of two I/O paths:
//! - `recvmmsg` (the default): batches of `recvmmsg(MSG_WAITFORONE)` and
//!   `sendmmsg`, two system calls per batch;
//! - `io_uring`: a multishot `recvmsg` over provided buffers and `sendmsg`
//!   requests, one `io_uring_enter` per turn that sends the last turn's
//!   replies and sleeps until the next datagrams (`kubewire_udp::uring`, the
//!   server's own ring, `COOP_TASKRUN`); `io_uring-deferred` is the same
//!   ring with `DEFER_TASKRUN`, `io_uring-plain` with neither.
//!
//! Usage: `kubewire-null-responder ADDR [CPU] [recvmmsg|io_uring|io_uring-deferred|io_uring-plain]`
#![allow(unsafe_code, clippy::print_stderr)] // raw batched socket calls

use kubewire_udp::uring::TaskRun;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

const BATCH: usize = 64;
const BUF: usize = 2048;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next().and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!(
            "usage: kubewire-null-responder ADDR [CPU] [recvmmsg|io_uring|io_uring-deferred|io_uring-plain]  (for example 127.0.0.1:5300 0 io_uring)"
        );
        std::process::exit(2);
    };
    let cpu = args.next().and_then(|c| c.parse::<usize>().ok());
    let io = args.next().unwrap_or_else(|| "recvmmsg".to_string());
    if let Some(cpu) = cpu {
        // SAFETY: cpu_set_t is plain data, set up for one CPU.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
    let socket = match UdpSocket::bind(addr) {
        Ok(socket) => socket,
        Err(error) => {
            eprintln!("cannot bind {addr}: {error}");
            std::process::exit(1);
        }
    };
    match io.as_str() {
        "recvmmsg" => serve_recvmmsg(&socket),
        "io_uring" => serve_io_uring(&socket, TaskRun::Cooperative),
        "io_uring-deferred" => serve_io_uring(&socket, TaskRun::Deferred),
        "io_uring-plain" => serve_io_uring(&socket, TaskRun::Interrupting),
        "io_uring-sendmsg" => serve_io_uring_with(
            &socket,
            TaskRun::Cooperative,
            kubewire_udp::uring::SendPath::RingSendmsg,
        ),
        "io_uring-sendmmsg" => serve_io_uring_with(
            &socket,
            TaskRun::Cooperative,
            kubewire_udp::uring::SendPath::Sendmmsg,
        ),
        other => {
            eprintln!(
                "unknown I/O path {other:?}: write recvmmsg, io_uring, io_uring-deferred or io_uring-plain"
            );
            std::process::exit(2);
        }
    }
}

fn serve_io_uring(socket: &UdpSocket, task_run: TaskRun) {
    serve_io_uring_with(socket, task_run, kubewire_udp::uring::SendPath::Ring)
}

fn serve_io_uring_with(socket: &UdpSocket, task_run: TaskRun, send: kubewire_udp::uring::SendPath) {
    let options = kubewire_udp::uring::Options {
        reply_len: kubewire_udp::uring::RECEIVE_BUFFER_LEN,
        task_run,
        send,
        ..kubewire_udp::uring::Options::default()
    };
    let mut ring = match kubewire_udp::uring::UdpRing::new(socket, options) {
        Ok(ring) => ring,
        Err(error) => {
            eprintln!("io_uring unavailable: {error}; run with recvmmsg instead");
            std::process::exit(1);
        }
    };
    let mut reported = std::time::Instant::now();
    loop {
        if reported.elapsed() > std::time::Duration::from_secs(5) {
            // What the ring did, for a run that lost queries.
            eprintln!("{:?}", ring.stats());
            reported = std::time::Instant::now();
        }
        let turn = ring.process(|query, out, _peer| {
            out[..query.len()].copy_from_slice(query);
            if query.len() > 2 {
                out[2] |= 0x80;
            }
            Some(query.len())
        });
        if let Err(error) = turn {
            eprintln!("io_uring receive failed: {error}; run with recvmmsg instead");
            std::process::exit(1);
        }
        if let Err(error) = ring.submit_and_wait(None) {
            eprintln!("{error}");
            std::process::exit(1);
        }
    }
}

fn serve_recvmmsg(socket: &UdpSocket) {
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; BUF]; BATCH];
    let mut peers: Box<[libc::sockaddr_storage]> = kubewire_udp::mmsg::zeroed(BATCH);
    let mut headers = kubewire_udp::mmsg::Headers::new(BATCH);
    let name_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    loop {
        for i in 0..BATCH {
            headers.point(i, bufs[i].as_mut_ptr(), BUF, &mut peers[i], name_len);
        }
        // SAFETY: headers point at buffers and addresses owned above.
        let count = match unsafe { headers.receive(fd, BATCH, libc::MSG_WAITFORONE) } {
            Ok(count) if count > 0 => count,
            _ => continue,
        };
        for i in 0..count {
            let len = headers.received_len(i).min(BUF);
            if len > 2 {
                bufs[i][2] |= 0x80;
            }
            let peer_len = headers.name_len(i);
            headers.point(i, bufs[i].as_mut_ptr(), len, &mut peers[i], peer_len);
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: as above; the headers now describe the replies.
            match unsafe { headers.send(fd, sent..count, 0) } {
                Ok(n) if n > 0 => sent += n,
                _ => break,
            }
        }
    }
}
