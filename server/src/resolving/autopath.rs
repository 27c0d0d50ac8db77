//! Autopath: a pod's search path completed on the server, as CoreDNS's
//! `autopath @kubernetes`.
//!
//! A pod's resolv.conf says `search <ns>.svc.<zone> svc.<zone> <zone>
//! <host domains>` with `ndots:5`, so a lookup of `api.github.com` is first
//! sent as `api.github.com.<ns>.svc.<zone>`. When such a first candidate
//! is NXDOMAIN and comes from an address that one namespace's pods alone
//! hold, and that namespace is `<ns>`, kubewire tries the rest of the list
//! itself: `<base>.svc.<zone>`, `<base>.<zone>`, `<base>.<host domain>`…,
//! then `<base>`. The first answer that is not NXDOMAIN wins and goes back
//! for the name asked, behind a CNAME from it to the name found (when the
//! answer has records); if every candidate is NXDOMAIN, the first one's own
//! NXDOMAIN goes back and the client walks its list as before.
//!
//! Deciding whether a query is a first candidate ([`first_candidate`]) is
//! pure and cheap, and is only asked for NXDOMAIN replies; the walk
//! ([`complete`]) runs on the core's reactor, like forwarding.

use super::chase::{Local, count, finish, from_table, set_count};
use super::resolver::Resolver;
use kubewire_answer::AnswerTable;
use kubewire_wire::records::{copy_record, first_record, read_name, write_plain_query};
use kubewire_wire::{NameBuf, Query, Rcode, Transport, parse_query};
use std::rc::Rc;

/// What autopath needs besides the table: fixed at start.
#[derive(Debug, Clone, Default)]
pub struct AutopathPlan {
    /// The host's search domains (from the resolv.conf configured), tried
    /// after the cluster's, lowercase.
    pub host_search: Vec<NameBuf>,
}

/// Why the host's search domains cannot be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "kubernetes.autopath_resolv_conf {path:?}: cannot read it for its search domains; \
     set kubernetes.autopath_resolv_conf = \"\" to search the cluster domains alone"
)]
pub struct SearchError {
    path: String,
    #[source]
    source: std::io::Error,
}

impl AutopathPlan {
    /// The plan, with the search domains of `resolv_conf` (`""`: none).
    pub fn from_resolv_conf(resolv_conf: &str) -> Result<AutopathPlan, SearchError> {
        if resolv_conf.is_empty() {
            return Ok(AutopathPlan::default());
        }
        let text = std::fs::read_to_string(resolv_conf).map_err(|source| SearchError {
            path: resolv_conf.to_string(),
            source,
        })?;
        Ok(AutopathPlan {
            host_search: search_domains(&text),
        })
    }
}

/// The search domains of a resolv.conf: the last `search` or `domain`
/// line wins, as in glibc.
pub fn search_domains(resolv_conf: &str) -> Vec<NameBuf> {
    let mut domains = Vec::new();
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        if let Some("search" | "domain") = words.next() {
            domains = words
                .filter_map(|d| NameBuf::from_text(d).ok())
                .filter(|d| *d != NameBuf::ROOT)
                .map(|d| d.to_lowercase())
                .collect();
        }
    }
    domains
}

/// A first candidate: the name the client wants, and the zone whose search
/// list to walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// What the client asked for before its search list: `api.github.com`.
    pub base: NameBuf,
    /// The cluster zone.
    pub zone: NameBuf,
}

/// Whether `key` (the lowercase query name) is the first search candidate
/// of a pod in `namespace`: `<base>.<namespace>.svc.<zone>` with a base of
/// at least one label.
pub fn first_candidate(table: &AnswerTable, key: &NameBuf, namespace: &[u8]) -> Option<Candidate> {
    let (_, zone) = table.zones().find(key)?;
    if !zone.cluster {
        return None;
    }
    let suffix = zone
        .apex
        .prepend_label(b"svc")
        .ok()?
        .prepend_label(namespace)
        .ok()?;
    if !key.ends_with(&suffix) || key.label_count() <= suffix.label_count() {
        return None;
    }
    let wire = key.as_wire();
    let at = kubewire_wire::name::suffix_offset(wire, suffix.as_wire())?;
    let mut base = wire[..at].to_vec();
    base.push(0);
    let (base, _) = NameBuf::from_wire(&base).ok()?;
    Some(Candidate {
        base,
        zone: zone.apex,
    })
}

/// The rest of the search list after the first candidate.
fn rest_of_search(candidate: &Candidate, plan: &AutopathPlan) -> Vec<NameBuf> {
    let mut names = Vec::new();
    let svc = candidate.zone.prepend_label(b"svc").ok();
    for suffix in svc.iter().chain([&candidate.zone]).chain(&plan.host_search) {
        if let Ok(name) = candidate.base.append(suffix) {
            names.push(name);
        }
    }
    names.push(candidate.base);
    names
}

/// What a walk found.
#[derive(Debug)]
pub struct Completed {
    /// The client's reply.
    pub reply: Vec<u8>,
    /// Its RCODE.
    pub rcode: Rcode,
    /// Whether a later candidate answered (CoreDNS's autopath success).
    pub found: bool,
}

/// Walks the search list after the first candidate, whose NXDOMAIN reply
/// (the table's, for `query`) is `nxdomain`.
pub async fn complete(
    resolver: &Rc<Resolver>,
    plan: &AutopathPlan,
    candidate: &Candidate,
    parsed: &Query<'_>,
    nxdomain: Vec<u8>,
    transport: Transport,
) -> Completed {
    let not_found = |reply: Vec<u8>| Completed {
        rcode: Rcode::NXDOMAIN,
        reply,
        found: false,
    };
    let table = resolver.table();
    let qtype = parsed.qtype();
    let payload = parsed.edns().map(|e| e.udp_payload_size);
    // The table's reply ends with our OPT when the client sent one.
    let opt_len = kubewire_wire::OPT_LEN;
    let opt = (parsed.edns().is_some() && nxdomain.len() >= opt_len)
        .then(|| nxdomain[nxdomain.len() - opt_len..].to_vec());
    let mut sub_query = Vec::new();
    let mut sub_reply = vec![0u8; kubewire_wire::MAX_MESSAGE];
    for name in rest_of_search(candidate, plan) {
        write_plain_query(0, &name, qtype, &mut sub_query);
        let found = match from_table(table, &name, &sub_query, &mut sub_reply) {
            Local::Reply(reply) => reply,
            // Outside the cluster zones, or a fallthrough zone's: forwarded.
            // Nothing forwards names outside the cluster: this one is no
            // answer.
            Local::Unanswered | Local::Outside if resolver.forwarder().is_none() => continue,
            // Through the cache, so that the node asks upstream once per
            // name however many pods walk their lists.
            Local::Unanswered | Local::Outside => {
                let forwarded = match parse_query(&sub_query) {
                    Ok(sub) => resolver.forward(&sub, Transport::Tcp).await,
                    Err(_) => None,
                };
                match forwarded {
                    Some(forwarded) => forwarded.reply,
                    // The upstreams failed: SERVFAIL, as CoreDNS does when
                    // a plugin behind autopath fails.
                    None => return failed(&nxdomain, opt, payload, transport),
                }
            }
        };
        let rcode = found.get(3).map_or(0, |b| u16::from(b & 0x0F));
        if rcode == Rcode::NXDOMAIN.0 {
            continue;
        }
        let (reply, rcode) = compose(&nxdomain, opt, &found, payload, transport);
        return Completed {
            reply,
            rcode,
            found: true,
        };
    }
    not_found(nxdomain)
}

/// The client's reply from a later candidate's answer `found`: the
/// client's header (from the table's reply `nxdomain`) and question, a
/// CNAME from the asked name to the first answer's owner (when there are
/// answers), then the answer's answer and authority records.
fn compose(
    nxdomain: &[u8],
    opt: Option<Vec<u8>>,
    found: &[u8],
    payload: Option<u16>,
    transport: Transport,
) -> (Vec<u8>, Rcode) {
    let Ok(question_end) = first_record(nxdomain) else {
        return (nxdomain.to_vec(), Rcode::NXDOMAIN);
    };
    let mut reply = nxdomain[..question_end].to_vec();
    for at in [6, 8, 10] {
        set_count(&mut reply, at, 0);
    }
    let limit = kubewire_wire::MAX_MESSAGE - kubewire_wire::OPT_LEN;
    let mut answers = 0u16;
    let Ok(mut pos) = first_record(found) else {
        return finish(reply, opt, transport, payload);
    };
    // The CNAME first: owner the question (C0 0C), target the first
    // answer's owner, TTL that answer's.
    let mut target = NameBuf::ROOT;
    if count(found, 6) > 0
        && let Ok(after_name) = read_name(found, pos, &mut target)
        && let Some(ttl) = found.get(after_name + 4..after_name + 8)
    {
        let target = target.as_wire();
        reply.extend_from_slice(&[0xC0, 0x0C, 0, 5, 0, 1]);
        reply.extend_from_slice(ttl);
        reply.extend_from_slice(&(target.len() as u16).to_be_bytes());
        reply.extend_from_slice(target);
        answers += 1;
    }
    let copy_section = |reply: &mut Vec<u8>, records: u16, pos: &mut usize| -> u16 {
        let mut copied = 0;
        for _ in 0..records {
            match copy_record(found, *pos, reply, limit) {
                Ok((next, _)) => {
                    *pos = next;
                    copied += 1;
                }
                Err(_) => break,
            }
        }
        copied
    };
    answers += copy_section(&mut reply, count(found, 6), &mut pos);
    set_count(&mut reply, 6, answers);
    let authority = copy_section(&mut reply, count(found, 8), &mut pos);
    set_count(&mut reply, 8, authority);
    // The header's RCODE and AA are the answer's.
    if let (Some(byte), Some(&found_flags)) = (reply.get_mut(3), found.get(3)) {
        *byte = (*byte & 0xF0) | (found_flags & 0x0F);
    }
    if let (Some(byte), Some(&found_flags)) = (reply.get_mut(2), found.get(2)) {
        *byte = (*byte & !0x04) | (found_flags & 0x04);
    }
    finish(reply, opt, transport, payload)
}

/// SERVFAIL with the client's header and question.
fn failed(
    nxdomain: &[u8],
    opt: Option<Vec<u8>>,
    payload: Option<u16>,
    transport: Transport,
) -> Completed {
    let question_end = first_record(nxdomain).unwrap_or(nxdomain.len());
    let mut reply = nxdomain[..question_end.min(nxdomain.len())].to_vec();
    for at in [6, 8, 10] {
        set_count(&mut reply, at, 0);
    }
    if let Some(byte) = reply.get_mut(3) {
        *byte = (*byte & 0xF0) | Rcode::SERVFAIL.header_bits();
    }
    let (reply, rcode) = finish(reply, opt, transport, payload);
    Completed {
        reply,
        rcode,
        found: false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn search_domains_take_the_last_search_line() {
        let text = "nameserver 10.0.0.1\nsearch a.example\nsearch Corp.Example ec2.internal .\noptions ndots:5\n";
        let domains: Vec<String> = search_domains(text)
            .iter()
            .map(|d| kubewire_wire::name::to_text(d.as_wire()))
            .collect();
        assert_eq!(domains, ["corp.example.", "ec2.internal."]);
    }
}
