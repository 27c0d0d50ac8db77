//! ExternalName Services: an A or AAAA query that the table answers with a
//! lone CNAME gets the target's records after it, as CoreDNS does.
//!
//! - A target in a cluster zone is looked up in the core's own table, and
//!   followed through further CNAMEs (ExternalName to ExternalName).
//! - A target outside is forwarded, through the cache like any other name,
//!   if anything forwards; the upstream follows any further CNAMEs itself.
//! - A chain that loops, or runs longer than [`MAX_CHAIN`], stops with what
//!   was found.
//!
//! The joined records are written with their names whole (see
//! [`kubewire_wire::records`]), and the client's size limit applies: a reply
//! that does not fit goes back with TC set and no records.

use super::resolver::Resolver;
use kubewire_answer::{AnswerTable, Response};
use kubewire_wire::records::{copy_record, first_record, write_plain_query};
use kubewire_wire::{HEADER_LEN, NameBuf, OUR_UDP_PAYLOAD, Query, Rcode, Transport, parse_query};
use std::cell::RefCell;
use std::rc::Rc;

/// Most CNAMEs followed for one query, as CoreDNS.
pub const MAX_CHAIN: usize = 8;

/// The client's reply and its RCODE, after chasing the CNAME in `reply`
/// (the table's answer to `query`).
pub async fn chase(
    resolver: &Rc<Resolver>,
    parsed: &Query<'_>,
    mut reply: Vec<u8>,
    transport: Transport,
) -> (Vec<u8>, Rcode) {
    let table = resolver.table();
    let rcode_of = |reply: &[u8]| Rcode(reply.get(3).map_or(0, |b| u16::from(b & 0x0F)));
    let qtype = parsed.qtype();
    let edns = parsed.edns();
    // Take our OPT off the end; it goes back on last.
    let opt = if edns.is_some() && reply.len() >= HEADER_LEN + kubewire_wire::OPT_LEN {
        let opt = reply.split_off(reply.len() - kubewire_wire::OPT_LEN);
        let additional = count(&reply, 10).saturating_sub(1);
        set_count(&mut reply, 10, additional);
        Some(opt)
    } else {
        None
    };
    let Ok(first) = first_record(&reply) else {
        return finish(reply, opt, transport, edns.map(|e| e.udp_payload_size));
    };
    // The table's CNAME: its target is where the chase starts.
    let mut scratch = Vec::new();
    let mut target = match copy_record(&reply, first, &mut scratch, usize::MAX) {
        Ok((_, copied)) => copied.cname,
        Err(_) => None,
    };
    let mut seen: Vec<NameBuf> = vec![*parsed.key()];
    let mut answers = count(&reply, 6);
    let mut rcode = Rcode::NOERROR;
    let mut sub_reply = vec![0u8; kubewire_wire::MAX_MESSAGE];
    let mut sub_query = Vec::new();
    while let Some(name) = target.take() {
        if seen.len() > MAX_CHAIN || seen.contains(&name) {
            break;
        }
        seen.push(name);
        write_plain_query(0, &name, qtype, &mut sub_query);
        let local = from_table(table, &name, &sub_query, &mut sub_reply);
        let in_cluster = !matches!(local, Local::Outside);
        let sub = if let Local::Reply(reply) = local {
            reply
        } else if in_cluster {
            break;
        } else {
            let Ok(sub_parsed) = parse_query(&sub_query) else {
                break;
            };
            match resolver.forward(&sub_parsed, Transport::Tcp).await {
                Some(forwarded) => forwarded.reply,
                None => break,
            }
        };
        rcode = rcode_of(&sub);
        let Ok(mut pos) = first_record(&sub) else {
            break;
        };
        for _ in 0..count(&sub, 6) {
            match copy_record(
                &sub,
                pos,
                &mut reply,
                kubewire_wire::MAX_MESSAGE - kubewire_wire::OPT_LEN,
            ) {
                Ok((next, copied)) => {
                    pos = next;
                    answers += 1;
                    // Within the cluster, follow the next alias ourselves.
                    if in_cluster && copied.cname.is_some() {
                        target = copied.cname;
                    }
                }
                Err(_) => break,
            }
        }
        set_count(&mut reply, 6, answers);
    }
    if let Some(byte) = reply.get_mut(3) {
        *byte = (*byte & 0xF0) | rcode.header_bits();
    }
    finish(reply, opt, transport, edns.map(|e| e.udp_payload_size))
}

/// What the table says of a name looked up on a client's behalf.
pub(super) enum Local {
    /// The table's reply.
    Reply(Vec<u8>),
    /// The name is in a cluster zone, but the table has no reply for it
    /// (a `fallthrough` zone's unknown name, say).
    Unanswered,
    /// The name is outside every authoritative zone.
    Outside,
}

/// Looks `name` up in the core's own table when it is in an authoritative
/// zone; `query` is a plain query for it, `scratch` a reply buffer.
pub(super) fn from_table(
    table: &RefCell<AnswerTable>,
    name: &NameBuf,
    query: &[u8],
    scratch: &mut [u8],
) -> Local {
    let in_cluster = table
        .borrow()
        .zones()
        .find(name)
        .is_some_and(|(_, zone)| zone.authoritative);
    if !in_cluster {
        return Local::Outside;
    }
    match table.borrow_mut().respond(query, Transport::Tcp, scratch) {
        Response::Reply { len, .. } => Local::Reply(scratch[..len].to_vec()),
        _ => Local::Unanswered,
    }
}

/// Puts the OPT back and applies the client's size limit.
pub(super) fn finish(
    mut reply: Vec<u8>,
    opt: Option<Vec<u8>>,
    transport: Transport,
    payload: Option<u16>,
) -> (Vec<u8>, Rcode) {
    let limit = match (transport, payload) {
        (Transport::Tcp, _) => kubewire_wire::MAX_MESSAGE,
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(size)) => usize::from(size.min(OUR_UDP_PAYLOAD)),
    };
    let opt_len = opt.as_ref().map_or(0, Vec::len);
    if reply.len() + opt_len > limit
        && let Ok(first) = first_record(&reply)
    {
        reply.truncate(first);
        for at in [6, 8, 10] {
            set_count(&mut reply, at, 0);
        }
        if let Some(flags) = reply.get_mut(2) {
            *flags |= 0x02;
        }
    }
    if let Some(opt) = opt {
        reply.extend_from_slice(&opt);
        let additional = count(&reply, 10) + 1;
        set_count(&mut reply, 10, additional);
    }
    let rcode = Rcode(reply.get(3).map_or(0, |b| u16::from(b & 0x0F)));
    (reply, rcode)
}

pub(super) fn count(message: &[u8], at: usize) -> u16 {
    message
        .get(at..at + 2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

pub(super) fn set_count(message: &mut [u8], at: usize, value: u16) {
    if let Some(field) = message.get_mut(at..at + 2) {
        field.copy_from_slice(&value.to_be_bytes());
    }
}
