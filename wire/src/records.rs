//! Moving records from one message into another: every name written out
//! whole, so that no compression pointer refers to the message it came
//! from. Used where answers are joined (a CNAME chased to its target's
//! records), never on the path of a plain cluster answer.
//!
//! The source must have passed a check that bounds its pointers
//! ([`crate::check_upstream_reply`], or be our own reply); the functions
//! here check again and fail rather than loop or read out of bounds.

use crate::name::{MAX_NAME_LEN, NameBuf};
use crate::query::HEADER_LEN;
use crate::rtype;

/// A record or name could not be copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyError {
    /// The source is malformed (cut short, or a bad pointer).
    Malformed,
    /// The destination has no room.
    NoRoom,
}

impl core::fmt::Display for CopyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            CopyError::Malformed => "malformed record",
            CopyError::NoRoom => "no room for the record",
        })
    }
}

impl std::error::Error for CopyError {}

/// Reads the possibly compressed name at `pos` into `name`, folded to
/// lower case. Returns the offset just past the name in place.
pub fn read_name(packet: &[u8], start: usize, name: &mut NameBuf) -> Result<usize, CopyError> {
    let mut wire = [0u8; MAX_NAME_LEN];
    let mut len = 0usize;
    let mut pos = start;
    let mut end = None;
    loop {
        let &label = packet.get(pos).ok_or(CopyError::Malformed)?;
        match label & 0xC0 {
            0x00 => {
                let size = 1 + usize::from(label);
                if len + size > MAX_NAME_LEN {
                    return Err(CopyError::Malformed);
                }
                let bytes = packet.get(pos..pos + size).ok_or(CopyError::Malformed)?;
                wire[len..len + size].copy_from_slice(bytes);
                len += size;
                if label == 0 {
                    let (parsed, _) = NameBuf::lowercase_from_wire(&wire[..len])
                        .map_err(|_| CopyError::Malformed)?;
                    *name = parsed;
                    return Ok(end.unwrap_or(pos + 1));
                }
                pos += size;
            }
            0xC0 => {
                let &low = packet.get(pos + 1).ok_or(CopyError::Malformed)?;
                let target = usize::from(u16::from_be_bytes([label & 0x3F, low]));
                // Backwards only, past the header: following always ends.
                if target >= pos || target < HEADER_LEN {
                    return Err(CopyError::Malformed);
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return Err(CopyError::Malformed),
        }
    }
}

/// Where a message's sections start: the first record after the question.
pub fn first_record(packet: &[u8]) -> Result<usize, CopyError> {
    let mut name = NameBuf::ROOT;
    let end = read_name(packet, HEADER_LEN, &mut name)? + 4;
    if end > packet.len() {
        return Err(CopyError::Malformed);
    }
    Ok(end)
}

/// One record copied: its type, and for a CNAME its target.
#[derive(Clone, Copy, Debug)]
pub struct Copied {
    /// The record type.
    pub rtype: u16,
    /// A CNAME's target, lowercase.
    pub cname: Option<NameBuf>,
}

/// Copies the record at `pos` in `packet` to the end of `out` (a message
/// being built), names uncompressed. Returns the source offset just past
/// the record, and what it was.
pub fn copy_record(
    packet: &[u8],
    pos: usize,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(usize, Copied), CopyError> {
    let mut name = NameBuf::ROOT;
    let fixed = read_name(packet, pos, &mut name)?;
    let field = |at: usize| -> Result<u16, CopyError> {
        packet
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(CopyError::Malformed)
    };
    let record_type = field(fixed)?;
    let rdlen = usize::from(field(fixed + 8)?);
    let rdata = fixed + 10;
    let end = rdata + rdlen;
    if end > packet.len() {
        return Err(CopyError::Malformed);
    }
    let start = out.len();
    let push = |out: &mut Vec<u8>, bytes: &[u8]| -> Result<(), CopyError> {
        if out.len() + bytes.len() > limit {
            return Err(CopyError::NoRoom);
        }
        out.extend_from_slice(bytes);
        Ok(())
    };
    push(out, name.as_wire())?;
    // Type, class and TTL as they are; RDLENGTH is written once known.
    push(out, &packet[fixed..fixed + 8])?;
    let rdlen_at = out.len();
    push(out, &[0, 0])?;
    // The names inside the data of the common types, written out whole.
    let (names_at, name_count, tail) = match record_type {
        rtype::CNAME | rtype::NS | rtype::PTR => (rdata, 1, 0),
        rtype::MX => (rdata + 2, 1, 0),
        rtype::SRV => (rdata + 6, 1, 0),
        rtype::SOA => (rdata, 2, 20),
        _ => (end, 0, 0),
    };
    push(
        out,
        packet.get(rdata..names_at).ok_or(CopyError::Malformed)?,
    )?;
    let mut at = names_at;
    let mut cname = None;
    for _ in 0..name_count {
        let mut inner = NameBuf::ROOT;
        at = read_name(packet, at, &mut inner)?;
        push(out, inner.as_wire())?;
        if record_type == rtype::CNAME {
            cname = Some(inner);
        }
    }
    if at + tail != end && name_count > 0 {
        return Err(CopyError::Malformed);
    }
    push(out, &packet[at..end])?;
    let written = out.len() - rdlen_at - 2;
    let written = u16::try_from(written).map_err(|_| CopyError::NoRoom)?;
    out[rdlen_at..rdlen_at + 2].copy_from_slice(&written.to_be_bytes());
    debug_assert!(out.len() > start);
    Ok((
        end,
        Copied {
            rtype: record_type,
            cname,
        },
    ))
}

/// Writes a query for `name` and `qtype` (RD set, no EDNS) into `out`.
pub fn write_plain_query(id: u16, name: &NameBuf, qtype: u16, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(name.as_wire());
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&crate::class::IN.to_be_bytes());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_are_copied_with_their_names_whole() {
        // www.example.com CNAME web.example.com (compressed), then its A.
        let mut packet = vec![0, 1, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        packet.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        packet
            .extend_from_slice(b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x06\x03web\xc0\x10");
        packet
            .extend_from_slice(b"\xc0\x2d\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x01\x02\x03\x04");
        let first = first_record(&packet).unwrap();
        let mut out = Vec::new();
        let (next, copied) = copy_record(&packet, first, &mut out, 4096).unwrap();
        assert_eq!(copied.rtype, rtype::CNAME);
        assert_eq!(
            copied.cname.unwrap(),
            NameBuf::from_text("web.example.com").unwrap()
        );
        assert_eq!(&out[..17], b"\x03www\x07example\x03com\x00");
        let (end, copied) = copy_record(&packet, next, &mut out, 4096).unwrap();
        assert_eq!(end, packet.len());
        assert_eq!(copied.rtype, rtype::A);
        assert!(out.ends_with(b"\x03web\x07example\x03com\x00\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x01\x02\x03\x04"));
        // A pointer forwards, or a cut, is refused; no room is said.
        let mut bad = packet.clone();
        bad[first + 1] = 200;
        assert_eq!(
            copy_record(&bad, first, &mut Vec::new(), 4096).unwrap_err(),
            CopyError::Malformed
        );
        for cut in first..packet.len() - 1 {
            assert!(
                copy_record(&packet[..cut], first, &mut Vec::new(), 4096).is_err() || cut >= next
            );
        }
        assert_eq!(
            copy_record(&packet, first, &mut Vec::new(), 10).unwrap_err(),
            CopyError::NoRoom
        );
    }
}
