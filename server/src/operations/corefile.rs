//! `kubewire config from-corefile`: a migration aid that reads a CoreDNS
//! Corefile (the kubeadm one) and writes the equivalent kubewire TOML.
//!
//! It translates the `kubernetes`, `forward`, `health`, `ready` and
//! `prometheus` directives and the server block's port; it recognises
//! `errors`, `reload`, `loadbalance` and `loop`, which kubewire always does;
//! and it lists every directive or option it cannot translate (`cache`,
//! since kubewire has no cache for forwarded names yet, and anything
//! unknown), with its line, on stderr and as comments in the output.

use crate::operations::config::{Config, SETTINGS};
use std::collections::BTreeMap;

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

#[derive(Debug)]
struct Directive {
    line: usize,
    name: String,
    args: Vec<String>,
    block: Vec<Directive>,
}

impl Directive {
    fn text(&self) -> String {
        std::iter::once(self.name.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Debug)]
struct ServerBlock {
    line: usize,
    keys: Vec<String>,
    directives: Vec<Directive>,
}

/// Splits into lines of tokens, with `{` and `}` as tokens of their own.
fn tokenize(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("");
        let mut tokens = Vec::new();
        for word in line.split_whitespace() {
            let mut rest = word;
            while !rest.is_empty() {
                if let Some(after) = rest.strip_prefix('{') {
                    tokens.push("{".to_string());
                    rest = after;
                } else if let Some(after) = rest.strip_prefix('}') {
                    tokens.push("}".to_string());
                    rest = after;
                } else {
                    let end = rest.find(['{', '}']).unwrap_or(rest.len());
                    tokens.push(rest[..end].trim_matches('"').to_string());
                    rest = &rest[end..];
                }
            }
        }
        if !tokens.is_empty() {
            lines.push((index + 1, tokens));
        }
    }
    lines
}

fn parse(origin: &str, text: &str) -> Result<Vec<ServerBlock>, CorefileError> {
    let lines = tokenize(text);
    let mut at = 0;
    let mut blocks = Vec::new();
    while at < lines.len() {
        let (line, tokens) = &lines[at];
        at += 1;
        let mut keys = tokens.clone();
        if keys.last().map(String::as_str) != Some("{") {
            return Err(CorefileError(format!(
                "{origin}:{line}: expected a server block such as \".:53 {{\"; found {:?}",
                tokens.join(" ")
            )));
        }
        keys.pop();
        let directives = parse_directives(origin, &lines, &mut at, *line)?;
        blocks.push(ServerBlock {
            line: *line,
            keys,
            directives,
        });
    }
    Ok(blocks)
}

/// Reads directives up to the `}` that closes the block opened at `opened`.
fn parse_directives(
    origin: &str,
    lines: &[(usize, Vec<String>)],
    at: &mut usize,
    opened: usize,
) -> Result<Vec<Directive>, CorefileError> {
    let mut directives = Vec::new();
    while let Some((line, tokens)) = lines.get(*at) {
        *at += 1;
        if tokens.len() == 1 && tokens[0] == "}" {
            return Ok(directives);
        }
        let mut words = tokens.clone();
        let opens = words.last().map(String::as_str) == Some("{");
        if opens {
            words.pop();
        }
        let mut words = words.into_iter();
        let Some(name) = words.next() else {
            return Err(CorefileError(format!(
                "{origin}:{line}: a block opens without a directive name"
            )));
        };
        let block = if opens {
            parse_directives(origin, lines, at, *line)?
        } else {
            Vec::new()
        };
        directives.push(Directive {
            line: *line,
            name,
            args: words.collect(),
            block,
        });
    }
    Err(CorefileError(format!(
        "{origin}:{opened}: this block is never closed with \"}}\""
    )))
}

/// A Go duration (`5s`, `500ms`, `1m30s`) in milliseconds.
fn go_duration_ms(text: &str) -> Option<u64> {
    let mut total_ns: f64 = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total_ns += number * scale;
        rest = &rest[unit_len..];
    }
    Some((total_ns / 1e6).round() as u64)
}

struct Builder {
    origin: String,
    values: BTreeMap<&'static str, (toml::Value, String)>,
    notes: Vec<String>,
    untranslated: Vec<String>,
    /// `forward ZONE …` blocks other than `.`, gathered into one table.
    stub_domains: toml::Table,
    /// `cache { disable success|denial ZONES }`: line, text and zones,
    /// judged once the cluster zones are known.
    cache_disables: Vec<(usize, String, Vec<String>)>,
}

impl Builder {
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
}

fn string(text: impl Into<String>) -> toml::Value {
    toml::Value::String(text.into())
}

/// `:9153` or `host:port` as a kubewire address.
fn address(text: &str) -> String {
    match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_string(),
    }
}

/// Translates a Corefile.
pub fn translate(origin: &str, text: &str) -> Result<Translation, CorefileError> {
    let blocks = parse(origin, text)?;
    let mut b = Builder {
        origin: origin.to_string(),
        values: BTreeMap::new(),
        notes: Vec::new(),
        untranslated: Vec::new(),
        stub_domains: toml::Table::new(),
        cache_disables: Vec::new(),
    };
    let Some((first, others)) = blocks.split_first() else {
        return Err(CorefileError(format!(
            "{origin}: no server block found; a Corefile starts with one such as \".:53 {{\""
        )));
    };
    let port_of = |key: &str| {
        let key = key.strip_prefix("dns://").unwrap_or(key);
        key.rsplit_once(':')
            .map_or("53", |(_, port)| port)
            .to_string()
    };
    let first_port = first.keys.first().map_or("53".to_string(), |k| port_of(k));
    for other in others {
        if other.keys.iter().all(|k| port_of(k) == first_port) {
            stub_domain_block(&mut b, other);
        } else {
            b.cannot(
                other.line,
                &other.keys.join(" "),
                "kubewire has one server; a server block on another port is not translated",
            );
        }
    }
    let mut listen = Vec::new();
    for key in &first.keys {
        let key = key.strip_prefix("dns://").unwrap_or(key);
        let (zone, port) = match key.rsplit_once(':') {
            Some((zone, port)) => (zone, port),
            None => (key, "53"),
        };
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
                let port = first
                    .keys
                    .first()
                    .and_then(|k| k.rsplit_once(':'))
                    .map_or("53", |(_, p)| p);
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
        match directive.name.as_str() {
            "bind" => {}
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
            "kubernetes" => kubernetes(&mut b, directive),
            "forward" => forward(&mut b, directive),
            "cache" => cache(&mut b, directive),
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
            "loop" => b.note(
                line,
                &text,
                "kubewire refuses, at start, any upstream that is one of its own listen addresses",
            ),
            _ => b.cannot(line, &text, "unknown to kubewire"),
        }
    }

    let cluster_zones: Vec<String> = match b.values.get("dns.zones") {
        Some((toml::Value::Array(zones), _)) => zones
            .iter()
            .filter_map(|z| z.as_str().map(str::to_ascii_lowercase))
            .collect(),
        _ => vec!["cluster.local".to_string()],
    };
    for (line, text, zones) in std::mem::take(&mut b.cache_disables) {
        let in_cluster = |zone: &String| {
            let zone = zone.trim_end_matches('.').to_ascii_lowercase();
            cluster_zones
                .iter()
                .any(|c| zone == *c || zone.ends_with(&format!(".{c}")))
        };
        if !zones.is_empty() && zones.iter().all(in_cluster) {
            b.note(
                line,
                &text,
                "kubewire never caches names in its cluster zones; they are answered live",
            );
        } else {
            b.cannot(
                line,
                &text,
                "kubewire caches every forwarded name; it cannot leave out a kind of answer for other zones",
            );
        }
    }
    if !b.stub_domains.is_empty() {
        let table = toml::Value::Table(std::mem::take(&mut b.stub_domains));
        b.set(
            "forward.stub_domains",
            table,
            first.line,
            "forward ZONE blocks",
        );
    }
    let mut out = format!(
        "# kubewire configuration translated by `kubewire config from-corefile` from {origin}.\n"
    );
    let mut section = "";
    for setting in SETTINGS {
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

/// `forward FROM TO… { options }`.
fn forward(b: &mut Builder, directive: &Directive) {
    let line = directive.line;
    let text = directive.text();
    let Some((from, to)) = directive.args.split_first() else {
        b.cannot(line, &text, "forward needs a zone and upstreams");
        return;
    };
    let upstreams = toml::Value::Array(to.iter().map(|u| string(u.as_str())).collect());
    let zone = from
        .strip_prefix("dns://")
        .unwrap_or(from)
        .trim_end_matches('.');
    if zone.is_empty() {
        b.set("forward.to", upstreams, line, &text);
    } else {
        b.stub_domains.insert(zone.to_string(), upstreams);
    }
    let integer = |text: &str| text.parse::<i64>().ok().map(toml::Value::Integer);
    for option in &directive.block {
        let option_line = option.line;
        let option_text = option.text();
        let first = option.args.first().map(String::as_str);
        let value = match (option.name.as_str(), first) {
            ("except", Some(_)) => Some((
                "forward.except",
                toml::Value::Array(
                    option
                        .args
                        .iter()
                        .map(|z| string(z.trim_end_matches('.')))
                        .collect(),
                ),
            )),
            ("policy", Some(policy @ ("random" | "round_robin" | "sequential"))) => {
                Some(("forward.policy", string(policy)))
            }
            ("max_fails", Some(n)) => integer(n).map(|v| ("forward.max_fails", v)),
            ("max_concurrent", Some(n)) => {
                integer(n).map(|v| ("forward.max_concurrent_per_core", v))
            }
            ("health_check", Some(duration)) if option.args.len() == 1 => go_duration_ms(duration)
                .map(|ms| ("forward.health_check_ms", toml::Value::Integer(ms as i64))),
            ("force_tcp", None) => Some(("forward.force_tcp", toml::Value::Boolean(true))),
            ("prefer_udp", None) => Some(("forward.prefer_udp", toml::Value::Boolean(true))),
            ("failfast_all_unhealthy_upstreams", None) => Some((
                "forward.failfast_all_unhealthy_upstreams",
                toml::Value::Boolean(true),
            )),
            ("tls_servername", Some(name)) if option.args.len() == 1 => {
                Some(("forward.tls_servername", string(name)))
            }
            ("expire", Some(_)) => {
                b.note(
                    option_line,
                    &option_text,
                    "kubewire renews its UDP sockets every 256 queries or 5 s and closes TCP connections idle for 10 s; there is no setting",
                );
                continue;
            }
            _ => None,
        };
        match value {
            Some((key, value)) => b.set(key, value, option_line, &option_text),
            None => b.cannot(
                option_line,
                &option_text,
                "forward option not supported by kubewire",
            ),
        }
    }
}

/// A server block after the first, for zones whose names go to their own
/// upstreams (`corp.example:53 { forward . 10.0.0.1 }`): kube-dns's
/// stubDomains written as CoreDNS blocks, and kubewire's
/// `forward.stub_domains`. The first block's other settings apply to these
/// zones too; anything else in the block is listed as not translated.
fn stub_domain_block(b: &mut Builder, block: &ServerBlock) {
    let zones: Vec<String> = block
        .keys
        .iter()
        .map(|key| {
            let key = key.strip_prefix("dns://").unwrap_or(key);
            let zone = key.rsplit_once(':').map_or(key, |(zone, _)| zone);
            zone.trim_end_matches('.').to_string()
        })
        .collect();
    let forward = block.directives.iter().find(|d| {
        d.name == "forward" && d.args.len() > 1 && d.args[0].trim_end_matches('.').is_empty()
    });
    let (Some(forward), false) = (forward, zones.iter().any(String::is_empty)) else {
        b.cannot(
            block.line,
            &block.keys.join(" "),
            "kubewire has one server; a further server block is translated only when it forwards its zones (a stub domain)",
        );
        return;
    };
    let upstreams = toml::Value::Array(
        forward.args[1..]
            .iter()
            .map(|u| string(u.as_str()))
            .collect(),
    );
    for zone in &zones {
        b.stub_domains.insert(zone.clone(), upstreams.clone());
    }
    for directive in &block.directives {
        let (line, text) = (directive.line, directive.text());
        if std::ptr::eq(directive, forward) {
            for option in &directive.block {
                b.cannot(
                    option.line,
                    &option.text(),
                    "a stub domain's forward options are not translated; the first block's forward options apply",
                );
            }
            continue;
        }
        match directive.name.as_str() {
            "errors" | "log" | "cache" | "loop" | "reload" | "prometheus" | "health" | "ready"
            | "loadbalance" => b.note(
                line,
                &text,
                "in a stub domain's block: the first server block's setting applies to these zones too",
            ),
            _ => b.cannot(line, &text, "not translated in a stub domain's block"),
        }
    }
}

/// `cache [TTL] [ZONES…] { options }`. Cluster answers are never cached
/// (they are live from the watch); the cache holds forwarded answers.
fn cache(b: &mut Builder, directive: &Directive) {
    let line = directive.line;
    let text = directive.text();
    let seconds = |n: u64| toml::Value::Integer(n as i64);
    let whole = |text: &str| text.parse::<u64>().ok();
    let mut args = directive.args.iter().map(String::as_str).peekable();
    // CoreDNS's defaults without a TTL: 3600 s positive, 1800 s negative.
    let (success_max, denial_max) = match args.peek().and_then(|a| whole(a)) {
        Some(ttl) => {
            args.next();
            (ttl, ttl)
        }
        None => (3600, 1800),
    };
    b.set("cache.max_ttl_s", seconds(success_max), line, &text);
    b.set("cache.denial_max_ttl_s", seconds(denial_max), line, &text);
    let zones: Vec<&str> = args
        .filter(|z| !z.trim_end_matches('.').is_empty())
        .collect();
    if !zones.is_empty() {
        b.cannot(
            line,
            &zones.join(" "),
            "cache zones: kubewire caches every forwarded name",
        );
    }
    let mut capacities = [None, None];
    for option in &directive.block {
        let option_line = option.line;
        let option_text = option.text();
        let args: Vec<&str> = option.args.iter().map(String::as_str).collect();
        let duration_s = |text: &str| go_duration_ms(text).map(|ms| ms.div_ceil(1000));
        let set = |b: &mut Builder, key: &'static str, value: toml::Value| {
            b.set(key, value, option_line, &option_text);
        };
        let ok = match (option.name.as_str(), args.as_slice()) {
            (kind @ ("success" | "denial"), [capacity, rest @ ..]) if rest.len() <= 2 => {
                let (max_key, min_key, slot) = if kind == "success" {
                    ("cache.max_ttl_s", "cache.min_ttl_s", 0)
                } else {
                    ("cache.denial_max_ttl_s", "cache.denial_min_ttl_s", 1)
                };
                let parsed: Option<Vec<u64>> = std::iter::once(*capacity)
                    .chain(rest.iter().copied())
                    .map(whole)
                    .collect();
                match parsed.as_deref() {
                    Some([capacity, ttls @ ..]) => {
                        capacities[slot] = Some(*capacity);
                        if let Some(&max) = ttls.first() {
                            set(b, max_key, seconds(max));
                        }
                        if let Some(&min) = ttls.get(1) {
                            set(b, min_key, seconds(min));
                        }
                        true
                    }
                    _ => false,
                }
            }
            ("prefetch", [amount, rest @ ..]) if rest.len() <= 2 => {
                let window = rest.first().map(|d| duration_s(d));
                let percent = rest
                    .get(1)
                    .map(|p| p.strip_suffix('%').and_then(|p| p.parse::<u64>().ok()));
                match (whole(amount), window, percent) {
                    (Some(amount), window, percent)
                        if window.is_none_or(|w| w.is_some())
                            && percent.is_none_or(|p| p.is_some()) =>
                    {
                        set(b, "cache.prefetch_amount", seconds(amount));
                        if let Some(Some(window)) = window {
                            set(b, "cache.prefetch_window_s", seconds(window));
                        }
                        if let Some(Some(percent)) = percent {
                            set(b, "cache.prefetch_percent", seconds(percent));
                        }
                        true
                    }
                    _ => false,
                }
            }
            ("serve_stale", rest) if rest.len() <= 3 => {
                let window = rest.first().map_or(Some(3600), |d| duration_s(d));
                let mode = rest.get(1).copied().unwrap_or("immediate");
                // CoreDNS answers stale with TTL 0 unless told otherwise.
                let ttl = rest.get(2).map_or(Some(0), |t| duration_s(t));
                match (window, mode, ttl) {
                    (Some(window), "immediate" | "verify", Some(ttl)) => {
                        set(b, "cache.serve_stale_s", seconds(window));
                        set(b, "cache.serve_stale_mode", string(mode));
                        set(b, "cache.stale_ttl_s", seconds(ttl));
                        true
                    }
                    _ => false,
                }
            }
            ("servfail", [duration]) => match duration_s(duration) {
                Some(ttl) => {
                    set(b, "cache.servfail_ttl_s", seconds(ttl));
                    true
                }
                None => false,
            },
            ("keepttl", []) => {
                set(b, "cache.keep_ttl", toml::Value::Boolean(true));
                true
            }
            ("disable", ["success" | "denial", zones @ ..]) => {
                let zones = zones.iter().map(|z| z.to_string()).collect();
                b.cache_disables
                    .push((option_line, option_text.clone(), zones));
                true
            }
            _ => false,
        };
        if !ok {
            b.cannot(
                option_line,
                &option_text,
                "cache option not supported by kubewire",
            );
        }
    }
    if capacities.iter().any(Option::is_some) {
        // One table for both kinds: room for both capacities (CoreDNS's
        // default is 9984 each).
        let total: u64 = capacities.iter().map(|c| c.unwrap_or(9984)).sum();
        b.set("cache.max_entries", seconds(total), line, &text);
    }
    // CoreDNS takes min(max(ttl, minimum), maximum): a cap below the
    // minimum (`cache 2`, with the default minimum of 5 s) wins. kubewire
    // refuses a minimum above the maximum, so the minimum comes down to it.
    let defaults = crate::operations::config::Cache::default();
    for (min_key, max_key, default_min) in [
        ("cache.min_ttl_s", "cache.max_ttl_s", defaults.min_ttl_s),
        (
            "cache.denial_min_ttl_s",
            "cache.denial_max_ttl_s",
            defaults.denial_min_ttl_s,
        ),
    ] {
        let get = |key: &str| b.values.get(key).and_then(|(v, _)| v.as_integer());
        let min = get(min_key).unwrap_or(i64::from(default_min));
        if let Some(max) = get(max_key)
            && min > max
        {
            b.set(min_key, toml::Value::Integer(max), line, &text);
        }
    }
}

/// `fallthrough [ZONES]` as a list of zones: none given means every zone
/// (`"."`).
fn fallthrough_zones<'a>(zones: impl Iterator<Item = &'a str>) -> toml::Value {
    let mut list: Vec<toml::Value> = zones
        .map(|z| z.trim_end_matches('.'))
        .map(|z| string(if z.is_empty() { "." } else { z }))
        .collect();
    if list.is_empty() {
        list.push(string("."));
    }
    toml::Value::Array(list)
}

/// `k8s_external [ZONES] { apex, ttl, headless, fallthrough }`; without
/// zones, the server block's, as CoreDNS.
fn k8s_external(b: &mut Builder, directive: &Directive, block_keys: &[String]) {
    let line = directive.line;
    let text = directive.text();
    let zone_of = |z: &str| {
        let z = z.strip_prefix("dns://").unwrap_or(z);
        let z = z.rsplit_once(':').map_or(z, |(zone, _)| zone);
        z.trim_end_matches('.').to_string()
    };
    let zones: Vec<String> = if directive.args.is_empty() {
        block_keys.iter().map(|k| zone_of(k)).collect()
    } else {
        directive.args.iter().map(|z| zone_of(z)).collect()
    };
    if zones.iter().any(String::is_empty) {
        b.cannot(
            line,
            &text,
            "an external zone at the root would answer every name; name the zone",
        );
        return;
    }
    b.set(
        "k8s_external.zones",
        toml::Value::Array(zones.into_iter().map(string).collect()),
        line,
        &text,
    );
    for option in &directive.block {
        let option_line = option.line;
        let option_text = option.text();
        match (option.name.as_str(), option.args.as_slice()) {
            ("apex", [apex]) => b.set(
                "k8s_external.apex",
                string(apex.as_str()),
                option_line,
                &option_text,
            ),
            ("ttl", [ttl]) => match ttl.parse::<i64>() {
                Ok(ttl) => b.set(
                    "k8s_external.ttl_seconds",
                    toml::Value::Integer(ttl),
                    option_line,
                    &option_text,
                ),
                Err(_) => b.cannot(option_line, &option_text, "not a number of seconds"),
            },
            ("headless", []) => b.set(
                "k8s_external.headless",
                toml::Value::Boolean(true),
                option_line,
                &option_text,
            ),
            ("fallthrough", zones) => b.set(
                "k8s_external.fallthrough",
                fallthrough_zones(zones.iter().map(String::as_str)),
                option_line,
                &option_text,
            ),
            _ => b.cannot(
                option_line,
                &option_text,
                "k8s_external option not supported by kubewire",
            ),
        }
    }
}

fn kubernetes(b: &mut Builder, directive: &Directive) {
    let line = directive.line;
    let text = directive.text();
    let zones: Vec<toml::Value> = directive
        .args
        .iter()
        .map(|z| z.trim_end_matches('.'))
        .filter(|z| *z != "in-addr.arpa" && *z != "ip6.arpa")
        .map(string)
        .collect();
    if !zones.is_empty() {
        b.set(
            "dns.zones",
            toml::Value::Array(zones.clone()),
            line,
            &format!("{text} (PTR records under in-addr.arpa and ip6.arpa are always served for cluster addresses)"),
        );
    }
    for option in &directive.block {
        let option_line = option.line;
        let option_text = option.text();
        let first = option.args.first().map(String::as_str);
        match (option.name.as_str(), first) {
            ("pods", Some(mode @ ("disabled" | "insecure" | "verified"))) => {
                b.set("kubernetes.pods", string(mode), option_line, &option_text);
            }
            ("ttl", Some(ttl)) => match ttl.parse::<i64>() {
                Ok(ttl) => b.set(
                    "dns.ttl_seconds",
                    toml::Value::Integer(ttl),
                    option_line,
                    &option_text,
                ),
                Err(_) => b.cannot(option_line, &option_text, "not a number of seconds"),
            },
            ("namespaces", Some(_)) => b.set(
                "kubernetes.namespaces",
                toml::Value::Array(option.args.iter().map(string).collect()),
                option_line,
                &option_text,
            ),
            ("labels", Some(_)) => b.set(
                "kubernetes.labels",
                string(option.args.join(" ")),
                option_line,
                &option_text,
            ),
            ("endpoint_pod_names", None) => b.set(
                "kubernetes.endpoint_pod_names",
                toml::Value::Boolean(true),
                option_line,
                &option_text,
            ),
            ("ignore_empty_service", None) | ("ignore", Some("empty_service")) => b.set(
                "kubernetes.ignore_empty_service",
                toml::Value::Boolean(true),
                option_line,
                &option_text,
            ),
            ("multicluster", None) => b.note(
                option_line,
                &option_text,
                "multicluster without zones is off, in CoreDNS as in kubewire",
            ),
            ("multicluster", Some(_)) => {
                let wanted: Vec<&str> = option
                    .args
                    .iter()
                    .map(|z| z.trim_end_matches('.'))
                    .collect();
                let served = |zone: &&str| {
                    zones
                        .iter()
                        .any(|z| z.as_str().is_some_and(|z| z.eq_ignore_ascii_case(zone)))
                };
                match wanted.iter().find(|zone| !served(zone)) {
                    Some(zone) => b.cannot(
                        option_line,
                        &option_text,
                        &format!(
                            "{zone} is not one of this kubernetes block's zones; list it there too (CoreDNS refuses this Corefile)"
                        ),
                    ),
                    None => b.set(
                        "kubernetes.multicluster",
                        toml::Value::Array(wanted.into_iter().map(string).collect()),
                        option_line,
                        &option_text,
                    ),
                }
            }
            ("zonal", None) => b.set(
                "kubernetes.zonal",
                toml::Value::Boolean(true),
                option_line,
                &option_text,
            ),
            ("kubeconfig", Some(path)) => {
                b.set("source.kubeconfig", string(path), option_line, &option_text)
            }
            ("fallthrough", _)
                if !option.args.is_empty()
                    && option
                        .args
                        .iter()
                        .all(|z| z.trim_end_matches('.').ends_with("arpa")) =>
            {
                b.note(
                    option_line,
                    &option_text,
                    "kubewire forwards the reverse names no cluster object owns, when it forwards",
                )
            }
            ("fallthrough", _) => {
                // Reverse names no object owns are always passed on.
                let zones =
                    option.args.iter().map(String::as_str).filter(|z| {
                        !matches!(z.trim_end_matches('.'), "in-addr.arpa" | "ip6.arpa")
                    });
                b.set(
                    "kubernetes.fallthrough",
                    fallthrough_zones(zones),
                    option_line,
                    &option_text,
                );
            }
            _ => b.cannot(
                option_line,
                &option_text,
                "kubernetes option not supported by kubewire",
            ),
        }
    }
}

#[cfg(test)]
mod tests;
