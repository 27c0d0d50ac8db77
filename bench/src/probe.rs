//! A minimal DNS prober for benchmarks: one query, the RCODE and answer count.

use kubewire_wire::NameBuf;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// Asks `name`/`qtype` over UDP and returns (RCODE, ANCOUNT), or `None` on
/// timeout or a reply that does not match the query.
pub fn ask(socket: &UdpSocket, server: SocketAddr, name: &str, qtype: u16) -> Option<(u16, u16)> {
    let id: u16 = (std::process::id() as u16) ^ 0x5a5a;
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    query.extend_from_slice(NameBuf::from_text(name).ok()?.as_wire());
    query.extend_from_slice(&qtype.to_be_bytes());
    query.extend_from_slice(&[0, 1]);
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    socket.send_to(&query, server).ok()?;
    let mut reply = [0u8; 4096];
    let (len, _) = socket.recv_from(&mut reply).ok()?;
    if len < 12 || reply[..2] != query[..2] {
        return None;
    }
    Some((
        u16::from(reply[3] & 0x0f),
        u16::from_be_bytes([reply[6], reply[7]]),
    ))
}
