//! What every reply must be, whatever was asked: a message a client can
//! parse. Shared by the well-formedness walk and the `respond` fuzz target
//! (which includes this file by path), so both hold replies to one rule.
//!
//! Beyond parsing with hickory-proto, a reply is walked byte by byte:
//! - the header's counts are the records that follow, and nothing follows
//!   them;
//! - every compression pointer points backwards, at the start of a label
//!   already read (a pointer into the middle of a label, or forwards, is
//!   what a client reports as a bad label type or a loop);
//! - labels are at most 63 bytes and names at most 255;
//! - every rdata that holds names ends where its names end;
//! - SRV targets are not compressed (RFC 2782);
//! - every record in the additional section but OPT is named by a record of
//!   the answer or authority section (an SRV or NS target);
//! - the ID and question are the query's, byte for byte, and OPT is there
//!   exactly when the query had one.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;

const HEADER_LEN: usize = 12;
const OPT: u16 = 41;

/// A wire name read from a message: where it ended, and its text in
/// lowercase (for matching additional records to the targets naming them).
struct ReadName {
    end: usize,
    lower: String,
}

/// Walks a message's names, remembering where each label starts.
struct Walker<'a> {
    message: &'a [u8],
    /// Label start -> length in wire bytes of the name from there.
    label_starts: HashMap<usize, usize>,
}

impl<'a> Walker<'a> {
    fn read_name(&mut self, at: usize, compress_allowed: bool) -> Result<ReadName, String> {
        let mut pos = at;
        let mut labels: Vec<(usize, usize)> = Vec::new();
        let mut text = String::new();
        let tail_len = loop {
            let len = *self
                .message
                .get(pos)
                .ok_or_else(|| format!("name at {at} runs past the end"))?;
            match len & 0xC0 {
                0x00 if len == 0 => {
                    labels.push((pos, 0));
                    pos += 1;
                    break 0;
                }
                0x00 => {
                    let label = self
                        .message
                        .get(pos + 1..pos + 1 + usize::from(len))
                        .ok_or_else(|| format!("label at {pos} runs past the end"))?;
                    text.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
                    text.push('.');
                    labels.push((pos, 1 + usize::from(len)));
                    pos += 1 + usize::from(len);
                }
                0xC0 => {
                    if !compress_allowed {
                        return Err(format!("compressed name at {at} where RFC 2782 forbids it"));
                    }
                    let pointer = self
                        .message
                        .get(pos..pos + 2)
                        .ok_or_else(|| format!("pointer at {pos} runs past the end"))?;
                    let target = usize::from(u16::from_be_bytes([pointer[0], pointer[1]]) & 0x3FFF);
                    if target >= pos {
                        return Err(format!("pointer at {pos} points forwards, to {target}"));
                    }
                    let suffix = *self.label_starts.get(&target).ok_or_else(|| {
                        format!("pointer at {pos} points at {target}, where no label starts")
                    })?;
                    text.push_str(&self.expand(target));
                    pos += 2;
                    break suffix;
                }
                _ => return Err(format!("bad label type {len:#04x} at {pos}")),
            }
        };
        // Each label starts a suffix: its wire length is what follows it.
        let literal: usize = labels.iter().map(|(_, len)| len).sum();
        let total = literal + tail_len + usize::from(labels.last().is_some_and(|l| l.1 == 0));
        if total > 255 {
            return Err(format!("name at {at} is {total} bytes, over 255"));
        }
        let mut remaining = total;
        for (start, len) in labels {
            if len == 0 {
                break;
            }
            self.label_starts.entry(start).or_insert(remaining);
            remaining -= len;
        }
        if text.is_empty() {
            text.push('.');
        }
        Ok(ReadName {
            end: pos,
            lower: text,
        })
    }

    /// The lowercase text of the name at a label start already checked.
    fn expand(&self, mut at: usize) -> String {
        let mut text = String::new();
        while let Some(&len) = self.message.get(at) {
            match len & 0xC0 {
                0x00 if len == 0 => break,
                0x00 => {
                    let label = &self.message[at + 1..at + 1 + usize::from(len)];
                    text.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
                    text.push('.');
                    at += 1 + usize::from(len);
                }
                _ => {
                    at = usize::from(
                        u16::from_be_bytes([self.message[at], self.message[at + 1]]) & 0x3FFF,
                    );
                }
            }
        }
        text
    }

    fn u16_at(&self, at: usize) -> Result<u16, String> {
        self.message
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| format!("message ends inside a field at {at}"))
    }
}

/// A record as the walk keeps it.
struct Record {
    section: usize,
    owner: String,
    rtype: u16,
    /// The name an SRV, NS, CNAME or PTR record points at.
    target: Option<String>,
}

/// Checks `reply` to `query`, a well-formed query of one question; says
/// what is wrong, with offsets, if anything is.
pub fn check_reply(query: &[u8], reply: &[u8]) -> Result<(), String> {
    let parsed = kubewire_wire::parse_query(query)
        .map_err(|e| format!("the query itself is not well-formed: {e}"))?;
    hickory_proto::op::Message::from_vec(reply)
        .map_err(|e| format!("hickory-proto cannot parse the reply: {e}"))?;
    if reply.len() < HEADER_LEN {
        return Err("shorter than a header".into());
    }
    if reply[..2] != query[..2] {
        return Err("the ID is not the query's".into());
    }
    if reply[2] & 0x80 == 0 {
        return Err("QR is not set".into());
    }
    let mut walker = Walker {
        message: reply,
        label_starts: HashMap::new(),
    };
    let counts: Vec<u16> = (0..4)
        .map(|i| walker.u16_at(4 + 2 * i))
        .collect::<Result<_, _>>()?;
    if counts[0] != 1 {
        return Err(format!("QDCOUNT is {}, not 1", counts[0]));
    }
    let question = walker.read_name(HEADER_LEN, false)?;
    let question_end = question.end + 4;
    if reply.get(HEADER_LEN..question_end) != Some(parsed.question_bytes()) {
        return Err("the question is not the query's, byte for byte".into());
    }
    let mut at = question_end;
    let mut records = Vec::new();
    for (section, &count) in counts[1..].iter().enumerate() {
        for index in 0..count {
            let context = |e: String| format!("section {section} record {index}: {e}");
            let owner = walker.read_name(at, true).map_err(context)?;
            let rtype = walker.u16_at(owner.end).map_err(context)?;
            let rdlen = usize::from(walker.u16_at(owner.end + 8).map_err(context)?);
            let rdata = owner.end + 10;
            let end = rdata + rdlen;
            if end > reply.len() {
                return Err(context(format!(
                    "rdata runs past the end ({end} > {})",
                    reply.len()
                )));
            }
            let names_end = |name: &ReadName| {
                if name.end == end {
                    Ok(())
                } else {
                    Err(context(format!(
                        "type {rtype} rdata ends at {end}, its name at {}",
                        name.end
                    )))
                }
            };
            let mut target = None;
            match rtype {
                // NS, CNAME, PTR: one name.
                2 | 5 | 12 => {
                    let name = walker.read_name(rdata, true).map_err(context)?;
                    names_end(&name)?;
                    target = Some(name.lower);
                }
                // SOA: two names, then five 32-bit fields.
                6 => {
                    let mname = walker.read_name(rdata, true).map_err(context)?;
                    let rname = walker.read_name(mname.end, true).map_err(context)?;
                    if rname.end + 20 != end {
                        return Err(context("SOA rdata length is off".into()));
                    }
                }
                // SRV: priority, weight, port, an uncompressed target.
                33 => {
                    let name = walker.read_name(rdata + 6, false).map_err(context)?;
                    names_end(&name)?;
                    target = Some(name.lower);
                }
                1 if rdlen != 4 => return Err(context(format!("A rdata of {rdlen} bytes"))),
                28 if rdlen != 16 => return Err(context(format!("AAAA rdata of {rdlen} bytes"))),
                OPT if section != 2 || owner.lower != "." => {
                    return Err(context(
                        "OPT outside the additional section, or not at the root".into(),
                    ));
                }
                _ => {}
            }
            records.push(Record {
                section,
                owner: owner.lower,
                rtype,
                target,
            });
            at = end;
        }
    }
    if at != reply.len() {
        return Err(format!(
            "the counts {counts:?} end at {at}, the message at {}",
            reply.len()
        ));
    }
    let opts = records.iter().filter(|r| r.rtype == OPT).count();
    if opts > 1 {
        return Err(format!("{opts} OPT records"));
    }
    let rcode = reply[3] & 0x0F;
    // FORMERR for a bad OPT need not echo one; every other reply does.
    if rcode != 1 && (opts == 1) != parsed.edns().is_some() {
        return Err(format!(
            "OPT in the reply: {opts}, in the query: {:?}",
            parsed.edns()
        ));
    }
    let named: Vec<&str> = records
        .iter()
        .filter(|r| r.section < 2)
        .filter_map(|r| r.target.as_deref())
        .collect();
    for record in records.iter().filter(|r| r.section == 2 && r.rtype != OPT) {
        if !named.contains(&record.owner.as_str()) {
            return Err(format!(
                "additional record {} (type {}) is named by no answer or authority record",
                record.owner, record.rtype
            ));
        }
    }
    Ok(())
}
