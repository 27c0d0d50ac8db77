//! A whole message in presentation form, as dig prints it, for people
//! (`kubewire explain`). Never on the query path: it allocates a string a
//! record.
//!
//! ```
//! use kubewire_wire::text::present;
//! // ID 0x1234, QR AA RD RA, one question, one answer: web.default.svc.cluster.local. A 10.96.0.7
//! let reply = b"\x12\x34\x85\x80\x00\x01\x00\x01\x00\x00\x00\x00\
//!     \x03web\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01\
//!     \xC0\x0C\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04\x0a\x60\x00\x07";
//! let shown = present(reply).unwrap();
//! assert_eq!(shown.flags, ["qr", "aa", "rd", "ra"]);
//! assert_eq!(shown.answer, ["web.default.svc.cluster.local. 5 IN A 10.96.0.7"]);
//! ```

use crate::name::{NameBuf, to_text};
use crate::query::HEADER_LEN;
use crate::records::{CopyError, read_name};
use crate::{Rcode, rtype};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A message, section by section, each record one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presented {
    /// The ID.
    pub id: u16,
    /// The RCODE (header bits only: an extended RCODE needs the OPT).
    pub rcode: Rcode,
    /// The flags set, in dig's order and spelling (`qr aa tc rd ra ad cd`).
    pub flags: Vec<&'static str>,
    /// The question, `name. CLASS TYPE`.
    pub question: Vec<String>,
    /// The answer section.
    pub answer: Vec<String>,
    /// The authority section.
    pub authority: Vec<String>,
    /// The additional section (the OPT record left out).
    pub additional: Vec<String>,
}

/// A type's mnemonic, or `TYPE<n>` (RFC 3597).
pub fn type_text(rtype: u16) -> String {
    rtype::name(rtype).map_or_else(|| format!("TYPE{rtype}"), str::to_string)
}

fn u16_at(packet: &[u8], at: usize) -> Result<u16, CopyError> {
    let bytes = packet.get(at..at + 2).ok_or(CopyError::Malformed)?;
    Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn u32_at(packet: &[u8], at: usize) -> Result<u32, CopyError> {
    let bytes = packet.get(at..at + 4).ok_or(CopyError::Malformed)?;
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn name_at(packet: &[u8], at: usize) -> Result<(String, usize), CopyError> {
    let mut name = NameBuf::ROOT;
    let end = read_name(packet, at, &mut name)?;
    Ok((to_text(name.as_wire()), end))
}

/// Presents `packet`, or says it is malformed.
pub fn present(packet: &[u8]) -> Result<Presented, CopyError> {
    let header = packet.get(..HEADER_LEN).ok_or(CopyError::Malformed)?;
    let flag_bits = u16::from_be_bytes([header[2], header[3]]);
    let mut shown = Presented {
        id: u16::from_be_bytes([header[0], header[1]]),
        rcode: Rcode(flag_bits & 0x0F),
        flags: Vec::new(),
        question: Vec::new(),
        answer: Vec::new(),
        authority: Vec::new(),
        additional: Vec::new(),
    };
    for (bit, name) in [
        (15, "qr"),
        (10, "aa"),
        (9, "tc"),
        (8, "rd"),
        (7, "ra"),
        (5, "ad"),
        (4, "cd"),
    ] {
        if flag_bits & (1 << bit) != 0 {
            shown.flags.push(name);
        }
    }
    let counts = [
        u16_at(packet, 4)?,
        u16_at(packet, 6)?,
        u16_at(packet, 8)?,
        u16_at(packet, 10)?,
    ];
    let mut pos = HEADER_LEN;
    for _ in 0..counts[0] {
        let (name, end) = name_at(packet, pos)?;
        let qtype = u16_at(packet, end)?;
        let class = u16_at(packet, end + 2)?;
        shown
            .question
            .push(format!("{name} {} {}", class_text(class), type_text(qtype)));
        pos = end + 4;
    }
    for (section, count) in [counts[1], counts[2], counts[3]].into_iter().enumerate() {
        for _ in 0..count {
            let (line, end) = record(packet, pos)?;
            pos = end;
            let Some(line) = line else { continue };
            match section {
                0 => shown.answer.push(line),
                1 => shown.authority.push(line),
                _ => shown.additional.push(line),
            }
        }
    }
    Ok(shown)
}

fn class_text(class: u16) -> String {
    match class {
        1 => "IN".to_string(),
        3 => "CH".to_string(),
        other => format!("CLASS{other}"),
    }
}

/// One record as a line (`None` for OPT), and the offset past it.
fn record(packet: &[u8], pos: usize) -> Result<(Option<String>, usize), CopyError> {
    let (owner, end) = name_at(packet, pos)?;
    let rtype = u16_at(packet, end)?;
    let class = u16_at(packet, end + 2)?;
    let ttl = u32_at(packet, end + 4)?;
    let rdlength = usize::from(u16_at(packet, end + 8)?);
    let start = end + 10;
    let rdata = packet
        .get(start..start + rdlength)
        .ok_or(CopyError::Malformed)?;
    let next = start + rdlength;
    if rtype == rtype::OPT {
        return Ok((None, next));
    }
    let data = match rtype {
        rtype::A if rdlength == 4 => {
            Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).to_string()
        }
        rtype::AAAA if rdlength == 16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(rdata);
            Ipv6Addr::from(octets).to_string()
        }
        rtype::CNAME | rtype::PTR | rtype::NS => name_at(packet, start)?.0,
        rtype::SRV if rdlength >= 7 => format!(
            "{} {} {} {}",
            u16_at(packet, start)?,
            u16_at(packet, start + 2)?,
            u16_at(packet, start + 4)?,
            name_at(packet, start + 6)?.0
        ),
        rtype::MX if rdlength >= 3 => {
            format!(
                "{} {}",
                u16_at(packet, start)?,
                name_at(packet, start + 2)?.0
            )
        }
        rtype::SOA => {
            let (mname, at) = name_at(packet, start)?;
            let (rname, at) = name_at(packet, at)?;
            let numbers: Vec<String> = (0..5)
                .map(|i| u32_at(packet, at + 4 * i).map(|n| n.to_string()))
                .collect::<Result<_, _>>()?;
            format!("{mname} {rname} {}", numbers.join(" "))
        }
        rtype::TXT => {
            let mut strings = Vec::new();
            let mut at = 0;
            while let Some(&len) = rdata.get(at) {
                let text = rdata
                    .get(at + 1..at + 1 + usize::from(len))
                    .ok_or(CopyError::Malformed)?;
                strings.push(format!("{:?}", String::from_utf8_lossy(text)));
                at += 1 + usize::from(len);
            }
            strings.join(" ")
        }
        _ => {
            let hex: String = rdata.iter().map(|b| format!("{b:02x}")).collect();
            format!("\\# {rdlength} {hex}")
        }
    };
    let line = format!(
        "{owner} {ttl} {} {} {data}",
        class_text(class),
        type_text(rtype)
    );
    Ok((Some(line), next))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_cut_message_is_malformed_not_a_panic() {
        let reply = b"\x12\x34\x85\x80\x00\x01\x00\x01\x00\x00\x00\x00\
            \x03web\x00\x00\x01\x00\x01\xC0\x0C\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04\x0a\x60";
        assert_eq!(present(reply), Err(CopyError::Malformed));
        for cut in 0..reply.len() {
            let _ = present(&reply[..cut]);
        }
    }

    #[test]
    fn srv_soa_and_unknown_types_are_shown() {
        let mut reply: Vec<u8> = b"\x00\x01\x84\x03\x00\x00\x00\x01\x00\x01\x00\x01".to_vec();
        // SRV 0 100 80 web.
        reply.extend_from_slice(
            b"\x01a\x00\x00\x21\x00\x01\x00\x00\x00\x05\x00\x0b\x00\x00\x00\x64\x00\x50\x03web\x00",
        );
        // SOA ns. host. 1 2 3 4 5
        reply.extend_from_slice(
            b"\x00\x00\x06\x00\x01\x00\x00\x00\x05\x00\x1e\x02ns\x00\x04host\x00",
        );
        for n in 1u32..=5 {
            reply.extend_from_slice(&n.to_be_bytes());
        }
        // TYPE999 with two bytes.
        reply.extend_from_slice(b"\x00\x03\xe7\x00\x01\x00\x00\x00\x05\x00\x02\xab\xcd");
        let shown = present(&reply).unwrap();
        assert_eq!(shown.rcode, Rcode::NXDOMAIN);
        assert_eq!(shown.flags, ["qr", "aa"]);
        assert_eq!(shown.answer, ["a. 5 IN SRV 0 100 80 web."]);
        assert_eq!(shown.authority, [". 5 IN SOA ns. host. 1 2 3 4 5"]);
        assert_eq!(shown.additional, [". 5 IN TYPE999 \\# 2 abcd"]);
    }
}
