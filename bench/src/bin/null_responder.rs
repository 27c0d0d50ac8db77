//! The floor of every comparison: a UDP responder that does no DNS work. It
//! answers each datagram with the datagram itself, QR set, batched with
//! `recvmmsg`/`sendmmsg`, pinned to one CPU. What it costs per query is the
//! kernel's own cost per packet on this machine.
//!
//! Usage: `kubewire-null-responder ADDR [CPU]`
#![allow(unsafe_code, clippy::print_stderr)] // raw batched socket calls

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

const BATCH: usize = 64;
const BUF: usize = 2048;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next().and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: kubewire-null-responder ADDR [CPU]  (for example 127.0.0.1:5300 0)");
        std::process::exit(2);
    };
    if let Some(cpu) = args.next().and_then(|c| c.parse::<usize>().ok()) {
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
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; BUF]; BATCH];
    let mut peers: Box<[libc::sockaddr_storage]> = kubewire_mmsg::zeroed(BATCH);
    let mut headers = kubewire_mmsg::Headers::new(BATCH);
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
