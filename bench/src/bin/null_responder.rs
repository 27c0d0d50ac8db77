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
    // SAFETY: zeroed libc structs are valid; pointers set below stay valid
    // for the life of the loop.
    let mut peers: Vec<libc::sockaddr_storage> =
        (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    // SAFETY: as above.
    let mut iovs: Vec<libc::iovec> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut headers: Vec<libc::mmsghdr> =
        // SAFETY: as above.
        (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    loop {
        for i in 0..BATCH {
            iovs[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast(),
                iov_len: BUF,
            };
            let h = &mut headers[i].msg_hdr;
            h.msg_name = (&mut peers[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: headers point at buffers owned above.
        let count = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if count <= 0 {
            continue;
        }
        let count = count as usize;
        for i in 0..count {
            let len = headers[i].msg_len as usize;
            if len > 2 {
                bufs[i][2] |= 0x80;
            }
            iovs[i].iov_len = len;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: as above; the headers now describe the replies.
            let n = unsafe {
                libc::sendmmsg(fd, headers[sent..].as_mut_ptr(), (count - sent) as u32, 0)
            };
            if n <= 0 {
                break;
            }
            sent += n as usize;
        }
    }
}
