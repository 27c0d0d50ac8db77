//! A minimal DNS prober for benchmarks: one query, the RCODE and answer count.

use kubewire_wire::NameBuf;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// Asks `name`/`qtype` over UDP and returns (RCODE, ANCOUNT), or `None` on
/// timeout or a reply that does not match the query.
pub fn ask(socket: &UdpSocket, server: SocketAddr, name: &str, qtype: u16) -> Option<(u16, u16)> {
    let id = send(socket, server, name, qtype)?;
    receive(socket, id)
}

/// Sends the query for `name`/`qtype`; its ID, for [`receive`]. Many
/// sockets can send before any receives, so that asking them all costs one
/// round trip rather than one each.
pub fn send(socket: &UdpSocket, server: SocketAddr, name: &str, qtype: u16) -> Option<u16> {
    let id: u16 = (std::process::id() as u16) ^ 0x5a5a;
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    query.extend_from_slice(NameBuf::from_text(name).ok()?.as_wire());
    query.extend_from_slice(&qtype.to_be_bytes());
    query.extend_from_slice(&[0, 1]);
    socket.send_to(&query, server).ok()?;
    Some(id)
}

/// The reply to the query [`send`] sent with `id`: (RCODE, ANCOUNT), or
/// `None` after 500 ms or for a reply that does not match.
pub fn receive(socket: &UdpSocket, id: u16) -> Option<(u16, u16)> {
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let mut reply = [0u8; 4096];
    let (len, _) = socket.recv_from(&mut reply).ok()?;
    if len < 12 || reply[..2] != id.to_be_bytes() {
        return None;
    }
    Some((
        u16::from(reply[3] & 0x0f),
        u16::from_be_bytes([reply[6], reply[7]]),
    ))
}
