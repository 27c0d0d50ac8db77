//! Addresses as names: reverse-lookup names and the dashed IP labels that
//! Kubernetes DNS uses.
//!
//! `10.244.1.7` is `7.1.244.10.in-addr.arpa.` in reverse and `10-244-1-7` as
//! a label; `fd00::1` is `fd00--1` as a label, and `fd00::` is `fd00--0`,
//! because a label must not end in `-` (CoreDNS appends the `0` likewise).

use crate::name::{NameBuf, labels};
use core::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The reverse-lookup name of an address: `in-addr.arpa.` for IPv4, and the
/// 32-nibble `ip6.arpa.` form for IPv6.
pub fn reverse_name(ip: IpAddr) -> NameBuf {
    let mut wire = [0u8; 74];
    let mut pos = 0usize;
    let mut label = |bytes: &[u8]| {
        wire[pos] = bytes.len() as u8;
        wire[pos + 1..pos + 1 + bytes.len()].copy_from_slice(bytes);
        pos += 1 + bytes.len();
    };
    match ip {
        IpAddr::V4(v4) => {
            for octet in v4.octets().iter().rev() {
                let text = itoa_u8(*octet);
                label(text.as_bytes());
            }
            label(b"in-addr");
        }
        IpAddr::V6(v6) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for byte in v6.octets().iter().rev() {
                label(&[HEX[usize::from(byte & 0x0F)]]);
                label(&[HEX[usize::from(byte >> 4)]]);
            }
            label(b"ip6");
        }
    }
    label(b"arpa");
    wire[pos] = 0;
    // Built from at most 34 short labels: always a valid name.
    NameBuf::from_wire(&wire[..=pos])
        .map(|(name, _)| name)
        .unwrap_or(NameBuf::ROOT)
}

/// The address a full reverse-lookup name stands for, or `None` if the name
/// is not exactly a 4-label `in-addr.arpa.` or 32-nibble `ip6.arpa.` name.
/// ASCII case is ignored.
pub fn address_from_reverse(wire: &[u8]) -> Option<IpAddr> {
    let mut iter = labels(wire);
    let mut octets = [0u8; 16];
    let count = labels(wire).count();
    if count == 6 {
        for i in (0..4).rev() {
            octets[i] = parse_decimal_octet(iter.next()?)?;
        }
        let (a, b) = (iter.next()?, iter.next()?);
        if a.eq_ignore_ascii_case(b"in-addr") && b.eq_ignore_ascii_case(b"arpa") {
            return Some(IpAddr::V4(Ipv4Addr::new(
                octets[0], octets[1], octets[2], octets[3],
            )));
        }
        return None;
    }
    if count == 34 {
        for i in (0..16).rev() {
            let low = hex_nibble(iter.next()?)?;
            let high = hex_nibble(iter.next()?)?;
            octets[i] = high << 4 | low;
        }
        let (a, b) = (iter.next()?, iter.next()?);
        if a.eq_ignore_ascii_case(b"ip6") && b.eq_ignore_ascii_case(b"arpa") {
            return Some(IpAddr::V6(Ipv6Addr::from(octets)));
        }
    }
    None
}

/// The dashed label of an address, as Kubernetes DNS writes pod and endpoint
/// names: `10-244-1-7`, `fd00--1`, and `fd00--0` for `fd00::`.
pub fn dashed_label(ip: IpAddr) -> String {
    let mut out = String::with_capacity(39);
    // Writing into a String cannot fail.
    let _ = write!(out, "{ip}");
    match ip {
        IpAddr::V4(_) => out = out.replace('.', "-"),
        IpAddr::V6(_) => {
            out = out.replace(':', "-");
            if out.ends_with('-') {
                out.push('0');
            }
        }
    }
    out
}

/// The address a dashed label stands for, or `None` if it is not one.
///
/// Like CoreDNS: a label with exactly three dashes and no `--` is IPv4, any
/// other is read as IPv6 with dashes for colons. Works without allocating.
pub fn address_from_dashed(label: &[u8]) -> Option<IpAddr> {
    if label.len() > 39 || label.is_empty() {
        return None;
    }
    let dashes = label.iter().filter(|&&b| b == b'-').count();
    let is_v4 = dashes == 3 && !label.windows(2).any(|w| w == b"--");
    let mut text = [0u8; 39];
    for (slot, &byte) in text.iter_mut().zip(label) {
        *slot = match byte {
            b'-' if is_v4 => b'.',
            b'-' => b':',
            other => other,
        };
    }
    let text = core::str::from_utf8(&text[..label.len()]).ok()?;
    if is_v4 {
        text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

fn parse_decimal_octet(label: &[u8]) -> Option<u8> {
    // No leading zeros: "010" is not the reverse label of 10.
    if label.is_empty() || label.len() > 3 || (label.len() > 1 && label[0] == b'0') {
        return None;
    }
    let mut value = 0u16;
    for &digit in label {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u16::from(digit - b'0');
    }
    u8::try_from(value).ok()
}

fn hex_nibble(label: &[u8]) -> Option<u8> {
    match label {
        [digit @ b'0'..=b'9'] => Some(digit - b'0'),
        [letter @ b'a'..=b'f'] => Some(letter - b'a' + 10),
        [letter @ b'A'..=b'F'] => Some(letter - b'A' + 10),
        _ => None,
    }
}

/// Decimal digits of a byte in a small stack buffer.
struct OctetText {
    digits: [u8; 3],
    len: usize,
}

impl OctetText {
    fn as_bytes(&self) -> &[u8] {
        &self.digits[3 - self.len..]
    }
}

fn itoa_u8(mut value: u8) -> OctetText {
    let mut out = OctetText {
        digits: [0; 3],
        len: 0,
    };
    loop {
        out.len += 1;
        out.digits[3 - out.len] = b'0' + value % 10;
        value /= 10;
        if value == 0 {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_v4() {
        let ip: IpAddr = "10.244.1.7".parse().unwrap();
        let name = reverse_name(ip);
        assert_eq!(name.to_string(), "7.1.244.10.in-addr.arpa.");
        assert_eq!(address_from_reverse(name.as_wire()), Some(ip));
        let zero: IpAddr = "0.0.0.0".parse().unwrap();
        assert_eq!(reverse_name(zero).to_string(), "0.0.0.0.in-addr.arpa.");
        let upper = NameBuf::from_text("7.1.244.10.IN-ADDR.ARPA").unwrap();
        assert_eq!(address_from_reverse(upper.as_wire()), Some(ip));
    }

    #[test]
    fn reverse_v6() {
        let ip: IpAddr = "fd00::1".parse().unwrap();
        let name = reverse_name(ip);
        assert_eq!(
            name.to_string(),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."
        );
        assert_eq!(address_from_reverse(name.as_wire()), Some(ip));
    }

    #[test]
    fn reverse_rejects_partial_and_odd_names() {
        for text in [
            "1.244.10.in-addr.arpa",
            "010.1.244.10.in-addr.arpa",
            "256.1.1.1.in-addr.arpa",
            "7.1.244.10.in-addr.example",
            "1.2.3.4.ip6.arpa",
            "x.1.1.1.in-addr.arpa",
        ] {
            let name = NameBuf::from_text(text).unwrap();
            assert_eq!(address_from_reverse(name.as_wire()), None, "{text}");
        }
    }

    #[test]
    fn dashed_labels() {
        let cases = [
            ("10.244.1.7", "10-244-1-7"),
            ("fd00::1", "fd00--1"),
            ("fd00::", "fd00--0"),
            ("::1", "--1"),
            ("2001:db8:0:1:2:3:4:5", "2001-db8-0-1-2-3-4-5"),
        ];
        for (ip, label) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(dashed_label(ip), label);
            assert_eq!(address_from_dashed(label.as_bytes()), Some(ip), "{label}");
        }
        for bad in [
            "10-244-1",
            "10-244-1-700",
            "web-0",
            "a-b-c-d",
            "",
            "1-2-3-4-5",
        ] {
            assert_eq!(address_from_dashed(bad.as_bytes()), None, "{bad}");
        }
    }
}
