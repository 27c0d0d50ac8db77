//! `kubewire config from-corefile`: a migration aid that reads a CoreDNS
//! Corefile and writes the equivalent kubewire TOML.
//!
//! Two shapes translate:
//! - a cluster DNS Corefile (kubeadm's): the first server block's
//!   `kubernetes`, `forward`, `cache`, `autopath`, `k8s_external`, `health`,
//!   `ready` and `prometheus`, further blocks on its port that forward
//!   their zones (stub domains), and `tls://` blocks (DNS over TLS served
//!   from the same answers, with the `tls` directive's files);
//! - NodeLocal DNSCache's Corefile (zone blocks forwarded to kube-dns with
//!   `force_tcp`, and `.` forwarded to the node's resolvers): node-local
//!   mode with the cluster zones forwarded.
//!
//! What kubewire always does (`errors`, `reload`, `loadbalance`, `loop`) is
//! noted; what it cannot do is listed, with its line, on stderr and as
//! comments in the output; what CoreDNS itself refuses is an error. The
//! output is checked to be a valid kubewire configuration.

use crate::operations::config::{Config, KEYS, Protocol, UpstreamEntry};
use crate::operations::failure::Chain;

mod cache;
mod forward;
mod kubernetes;
mod node_local;
mod parse;
mod tls;

use cache::{cache, judge_cache_disables};
use forward::{forward, stub_domain_block};
use kubernetes::{k8s_external, kubernetes};
use node_local::{PILLAR_LOCAL_DNS, is_node_local, node_local};
use parse::{Directive, ServerBlock, go_duration_ms, parse, split_key};
use std::collections::BTreeMap;
use tls::{is_tls_block, tls_block};

/// The result of a translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// The TOML, with comments saying where each value came from.
    pub toml: String,
    /// What could not be translated, one line each (`Corefile:14: forward …: why`).
    pub untranslated: Vec<String>,
}

/// A Corefile that cannot be read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CorefileError(String);

struct Builder {
    origin: String,
    values: BTreeMap<&'static str, (toml::Value, String)>,
    notes: Vec<String>,
    untranslated: Vec<String>,
    /// What CoreDNS itself refuses: the translation is an error.
    refused: Vec<String>,
    /// `forward.tls_servername` once chosen, and where from: kubewire has
    /// one TLS name for every upstream.
    tls_name: Option<(String, String)>,
    /// `forward ZONE …` blocks other than `.`, gathered into one table.
    stub_domains: toml::Table,
    /// `cache { disable success|denial ZONES }`: line, text and zones,
    /// judged once the cluster zones are known.
    cache_disables: Vec<(usize, String, Vec<String>)>,
}

impl Builder {
    fn new(origin: &str) -> Builder {
        Builder {
            origin: origin.to_string(),
            values: BTreeMap::new(),
            notes: Vec::new(),
            untranslated: Vec::new(),
            refused: Vec::new(),
            tls_name: None,
            stub_domains: toml::Table::new(),
            cache_disables: Vec::new(),
        }
    }
    fn set(&mut self, key: &'static str, value: toml::Value, line: usize, from: &str) {
        self.values
            .insert(key, (value, format!("{}:{line}: {from}", self.origin)));
    }
    fn note(&mut self, line: usize, text: &str, why: &str) {
        self.notes
            .push(format!("{}:{line}: {text}: {why}", self.origin));
    }
    fn cannot(&mut self, line: usize, text: &str, why: &str) {
        self.untranslated
            .push(format!("{}:{line}: {text}: {why}", self.origin));
    }
    /// The TLS name of `upstream`: the first one sets
    /// `forward.tls_servername`; a different one later is not translated.
    fn tls_name(&mut self, line: usize, upstream: &str, name: String) {
        match &self.tls_name {
            None => {
                let from = format!("the TLS name of {upstream}");
                self.set("forward.tls_servername", string(name.as_str()), line, &from);
                self.tls_name = Some((name, upstream.to_string()));
            }
            Some((chosen, _)) if *chosen == name => {}
            Some((chosen, first)) => {
                let why = format!(
                    "kubewire checks every TLS upstream against one name, {chosen:?} (of {first}), not {name:?}"
                );
                self.cannot(line, upstream, &why);
            }
        }
    }
    fn refuse(&mut self, line: usize, text: &str, why: &str) {
        self.refused
            .push(format!("{}:{line}: {text}: {why}", self.origin));
    }
    /// A directive CoreDNS allows once per server block, given twice.
    fn refuse_repeats(&mut self, block: &ServerBlock) {
        for (index, directive) in block.directives.iter().enumerate() {
            let once = matches!(
                directive.name.as_str(),
                "kubernetes" | "cache" | "autopath" | "loop" | "k8s_external"
            );
            if once
                && block.directives[..index]
                    .iter()
                    .any(|d| d.name == directive.name)
            {
                self.refuse(
                    directive.line,
                    &directive.text(),
                    "given twice in one server block; CoreDNS refuses that too: keep one",
                );
            }
        }
    }
}

fn string(text: impl Into<String>) -> toml::Value {
    toml::Value::String(text.into())
}

/// `:9153` or `host:port` as a kubewire address; NodeLocal DNSCache's
/// `__PILLAR__LOCAL__DNS__` is its link-local address, 169.254.20.10.
fn address(text: &str) -> String {
    let text = &text.replace(PILLAR_LOCAL_DNS, "169.254.20.10");
    match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_string(),
    }
}

/// Translates a Corefile.
pub fn translate(origin: &str, text: &str) -> Result<Translation, CorefileError> {
    let blocks = parse(origin, text)?;
    let mut b = Builder::new(origin);
    let Some((first, others)) = blocks.split_first() else {
        return Err(CorefileError(format!(
            "{origin}: no server block found; a Corefile starts with one such as \".:53 {{\""
        )));
    };
    for block in &blocks {
        b.refuse_repeats(block);
    }
    if is_node_local(&blocks) {
        node_local(&mut b, &blocks);
        return finish(origin, b);
    }
    let mut listen = Vec::new();
    for key in &first.keys {
        let (zone, port) = split_key(key);
        if zone != "." {
            b.cannot(
                first.line,
                key,
                "a server block for one zone; kubewire serves its cluster zones and refuses the rest",
            );
        }
        let address = format!("0.0.0.0:{port}");
        if !listen.contains(&address) {
            listen.push(address);
        }
    }
    if first
        .directives
        .iter()
        .any(|d| d.name == "bind" && !d.args.is_empty())
    {
        listen.clear();
        for directive in first.directives.iter().filter(|d| d.name == "bind") {
            for host in &directive.args {
                let port = first.port();
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                listen.push(format!("{host}:{port}"));
            }
        }
    }
    let listen_from = first.keys.join(" ");
    b.set(
        "dns.listen",
        toml::Value::Array(listen.into_iter().map(string).collect()),
        first.line,
        &listen_from,
    );

    for directive in &first.directives {
        let line = directive.line;
        let text = directive.text();
        if server_directive(&mut b, directive) {
            continue;
        }
        match directive.name.as_str() {
            "bind" => {}
            "kubernetes" => kubernetes(&mut b, directive),
            "forward" => forward(&mut b, directive),
            "cache" => cache(&mut b, directive),
            "dnstap" => dnstap(&mut b, directive),
            "k8s_external" => k8s_external(&mut b, directive, &first.keys),
            "autopath" => match directive.args.as_slice() {
                [only] if only == "@kubernetes" => {
                    b.set("kubernetes.autopath", toml::Value::Boolean(true), line, &text)
                }
                _ => b.cannot(
                    line,
                    &text,
                    "kubewire's autopath is `autopath @kubernetes` (the cluster's search path, then /etc/resolv.conf's); zones and other resolv.conf files are not supported",
                ),
            },
            _ => b.cannot(line, &text, "unknown to kubewire"),
        }
    }

    // Further blocks after the first, whose settings (such as the TLS
    // name) come first.
    let first_port = first.port();
    for other in others {
        if is_tls_block(other) {
            tls_block(&mut b, other, first);
        } else if other.keys.iter().all(|k| split_key(k).1 == first_port) {
            stub_domain_block(&mut b, other);
        } else {
            b.cannot(
                other.line,
                &other.keys.join(" "),
                "kubewire has one server; a server block on another port is not translated",
            );
        }
    }
    judge_cache_disables(&mut b, true);
    if !b.stub_domains.is_empty() {
        let table = toml::Value::Table(std::mem::take(&mut b.stub_domains));
        b.set(
            "forward.stub_domains",
            table,
            first.line,
            "forward ZONE blocks",
        );
    }
    finish(origin, b)
}

/// `dnstap SOCKET [full] { identity …; version …; extra … }`.
fn dnstap(b: &mut Builder, directive: &Directive) {
    let line = directive.line;
    let text = directive.text();
    let (socket, full) = match directive.args.as_slice() {
        [socket] => (socket, false),
        [socket, full] if full == "full" => (socket, true),
        [socket, full, ..] if full == "full" && directive.args.len() == 4 => {
            b.cannot(
                line,
                &text,
                "the write buffer and queue sizes are kubewire's own (a bounded queue per server)",
            );
            (socket, true)
        }
        _ => {
            return b.refuse(
                line,
                &text,
                "dnstap takes a socket and, optionally, full; CoreDNS refuses other arguments too",
            );
        }
    };
    if let Err(error) = crate::operations::dnstap::Target::parse(socket) {
        return b.cannot(line, &text, &format!("kubewire sends dnstap to {error}"));
    }
    b.set("dnstap.to", string(socket.as_str()), line, &text);
    if full {
        b.set("dnstap.full", toml::Value::Boolean(true), line, &text);
    }
    for option in &directive.block {
        let key = match option.name.as_str() {
            "identity" => "dnstap.identity",
            "version" => "dnstap.version",
            "extra" => "dnstap.extra",
            _ => {
                b.cannot(
                    option.line,
                    &option.text(),
                    "not supported by kubewire's dnstap",
                );
                continue;
            }
        };
        b.set(
            key,
            string(option.args.join(" ")),
            option.line,
            &option.text(),
        );
    }
}

/// The TOML text, with where each value came from; checked to be a valid
/// kubewire configuration.
fn finish(origin: &str, b: Builder) -> Result<Translation, CorefileError> {
    if !b.refused.is_empty() {
        return Err(CorefileError(b.refused.join("\n")));
    }
    let mut out = format!(
        "# kubewire configuration translated by `kubewire config from-corefile` from {origin}.\n"
    );
    let mut section = "";
    for setting in KEYS {
        let Some((value, from)) = b.values.get(setting.key) else {
            continue;
        };
        let (sec, key) = setting.key.split_once('.').unwrap_or(("", setting.key));
        if sec != section {
            section = sec;
            out.push_str(&format!("\n[{sec}]\n"));
        }
        out.push_str(&format!("# from {from}\n{key} = {value}\n"));
    }
    if !b.notes.is_empty() {
        out.push_str("\n# Always on in kubewire, nothing to set:\n");
        for note in &b.notes {
            out.push_str(&format!("# - {note}\n"));
        }
    }
    if !b.untranslated.is_empty() {
        out.push_str("\n# Not translated:\n");
        for note in &b.untranslated {
            out.push_str(&format!("# - {note}\n"));
        }
    }
    // What we write must be a valid kubewire configuration.
    Config::parse("the translation", &out).map_err(|e| {
        CorefileError(format!(
            "{origin}: the Corefile translates to an invalid kubewire configuration: {e}"
        ))
    })?;
    Ok(Translation {
        toml: out,
        untranslated: b.untranslated,
    })
}

/// The directives that mean the same in every server block: what kubewire
/// always does (`errors`, `reload`, `loadbalance`, `loop`) and its HTTP
/// listeners (`health`, `ready`, `prometheus`). Whether it was one.
fn server_directive(b: &mut Builder, directive: &Directive) -> bool {
    let line = directive.line;
    let text = directive.text();
    match directive.name.as_str() {
        "errors" => b.note(line, &text, "kubewire always logs errors, once per cause"),
        "reload" => b.note(
            line,
            &text,
            "kubewire reloads its --config file on SIGHUP and when the file changes",
        ),
        "loadbalance" => b.note(
            line,
            &text,
            "kubewire always rotates A and AAAA answers round-robin",
        ),
        "loop" if !directive.args.is_empty() || !directive.block.is_empty() => b.refuse(
            line,
            &text,
            "loop takes no arguments; CoreDNS refuses them too",
        ),
        "loop" => b.note(
            line,
            &text,
            "kubewire refuses, at start, any upstream that is one of its own listen addresses",
        ),
        "health" => {
            let addr = directive.args.first().map_or(":8080", String::as_str);
            b.set("http.health_addr", string(address(addr)), line, &text);
            for option in &directive.block {
                let option_text = option.text();
                match (option.name.as_str(), option.args.first()) {
                    ("lameduck", Some(duration)) => match go_duration_ms(duration) {
                        Some(ms) => b.set(
                            "lifecycle.lameduck_ms",
                            toml::Value::Integer(ms as i64),
                            option.line,
                            &option_text,
                        ),
                        None => b.cannot(option.line, &option_text, "not a duration"),
                    },
                    _ => b.cannot(option.line, &option_text, "unknown health option"),
                }
            }
        }
        "ready" => {
            let addr = directive.args.first().map_or(":8181", String::as_str);
            b.set("http.ready_addr", string(address(addr)), line, &text);
        }
        "prometheus" => {
            let addr = directive.args.first().map_or(":9153", String::as_str);
            b.set("http.metrics_addr", string(address(addr)), line, &text);
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod coredns_setup;
#[cfg(test)]
mod tests;
