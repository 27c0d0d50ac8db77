//! `forward`: upstreams, their options, and stub-domain server blocks.

use super::*;

/// `forward FROM TO… { options }`.
pub(super) fn forward(b: &mut Builder, directive: &Directive) {
    let line = directive.line;
    let text = directive.text();
    let Some((from, to)) = directive.args.split_first() else {
        b.cannot(line, &text, "forward needs a zone and upstreams");
        return;
    };
    let zone = from
        .strip_prefix("dns://")
        .unwrap_or(from)
        .trim_end_matches('.');
    let named_upstream = to
        .iter()
        .any(|u| u.starts_with("tls://") && u.contains('%'));
    if named_upstream && directive.block.iter().any(|o| o.name == "tls_servername") {
        b.refuse(
            line,
            &text,
            "TLS names in the upstreams (tls://IP%NAME) and tls_servername together; CoreDNS refuses that too: keep one",
        );
    }
    if let Some(upstreams) = usable_upstreams(b, line, to, tls_servername_of(directive)) {
        if zone.is_empty() {
            b.set("forward.to", upstreams, line, &text);
        } else {
            b.stub_domains.insert(zone.to_string(), upstreams);
        }
    }
    let has = |name: &str| {
        directive
            .block
            .iter()
            .any(|o| o.name == name && o.args.is_empty())
    };
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
            ("prefer_udp", None) if has("force_tcp") => {
                b.note(
                    option_line,
                    &option_text,
                    "force_tcp takes precedence, as in CoreDNS",
                );
                continue;
            }
            ("prefer_udp", None) => Some(("forward.prefer_udp", toml::Value::Boolean(true))),
            ("tls", _) => {
                tls_option(b, option);
                continue;
            }
            ("failfast_all_unhealthy_upstreams", None) => Some((
                "forward.failfast_all_unhealthy_upstreams",
                toml::Value::Boolean(true),
            )),
            // Taken with the upstreams, above.
            ("tls_servername", Some(_)) if option.args.len() == 1 => continue,
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

/// A forward directive's `tls_servername NAME`, if it has one.
fn tls_servername_of(directive: &Directive) -> Option<&str> {
    directive
        .block
        .iter()
        .find(|o| o.name == "tls_servername" && o.args.len() == 1)
        .map(|o| o.args[0].as_str())
}

/// A forward directive's upstreams that kubewire can use, as a TOML list;
/// each other one is listed as not translated. CoreDNS's per-upstream TLS
/// name (`tls://IP%NAME`), or the directive's `tls_servername`, becomes
/// `forward.tls_servername` (kubewire has one, for every forward directive
/// and block); without either, the TLS upstream's address is the name, as
/// CoreDNS checks the certificate against the address it dials. `None`
/// when none is left.
pub(super) fn usable_upstreams(
    b: &mut Builder,
    line: usize,
    upstreams: &[String],
    tls_servername: Option<&str>,
) -> Option<toml::Value> {
    let mut kept = Vec::new();
    let mut names: Vec<(String, String)> = Vec::new();
    for upstream in upstreams {
        let (entry, name) = match upstream.strip_prefix("tls://") {
            Some(rest) => {
                let (address, name) = split_tls_name(rest);
                (format!("tls://{address}"), name)
            }
            None => (upstream.clone(), None),
        };
        match entry.parse::<UpstreamEntry>() {
            Ok(parsed) => {
                let tls = parsed.servers().iter().find(|u| u.protocol == Protocol::Tls);
                if let Some(server) = tls {
                    let name = tls_servername
                        .map(str::to_string)
                        .or(name)
                        .unwrap_or_else(|| server.addr.ip().to_string());
                    names.push((upstream.clone(), name));
                }
                kept.push(string(entry));
            }
            Err(error) => b.cannot(
                line,
                upstream,
                &format!(
                    "{}; kubewire forwards to addresses over UDP, TCP or TLS, and to resolv.conf files",
                    Chain(&error)
                ),
            ),
        }
    }
    for (upstream, name) in names {
        b.tls_name(line, &upstream, name);
    }
    if kept.is_empty() {
        b.cannot(
            line,
            &upstreams.join(" "),
            "no upstream left that kubewire can use",
        );
        return None;
    }
    Some(toml::Value::Array(kept))
}

/// `IP%NAME`, `IP%NAME:PORT` or `[IP%NAME]:PORT` (CoreDNS's TLS upstream
/// with its server name): the address, and the name if given.
pub(super) fn split_tls_name(text: &str) -> (String, Option<String>) {
    let Some((address, rest)) = text.split_once('%') else {
        return (text.to_string(), None);
    };
    if let Some(inner) = address.strip_prefix('[') {
        // [IP%NAME]:PORT
        let (name, port) = rest.split_once(']').unwrap_or((rest, ""));
        return (format!("[{inner}]{port}"), Some(name.to_string()));
    }
    // IP%NAME or IP%NAME:PORT, where an IPv6 address needs no port.
    match rest.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() && !address.contains(':') => {
            (format!("{address}:{port}"), Some(name.to_string()))
        }
        _ => (address.to_string(), Some(rest.to_string())),
    }
}

/// forward's `tls [CA] | [CERT KEY [CA]]`.
pub(super) fn tls_option(b: &mut Builder, option: &Directive) {
    let (line, text) = (option.line, option.text());
    let ca = match option.args.as_slice() {
        [] => None,
        [ca] => Some(ca),
        [_, _] => {
            b.cannot(
                line,
                &text,
                "kubewire has no TLS client certificates for upstreams",
            );
            None
        }
        [_, _, ca] => {
            b.cannot(
                line,
                &text,
                "kubewire has no TLS client certificates for upstreams; the CA is kept",
            );
            Some(ca)
        }
        _ => {
            b.refuse(
                line,
                &text,
                "tls takes at most three files; CoreDNS refuses more too",
            );
            None
        }
    };
    match ca {
        Some(ca) => b.set("forward.tls_ca_file", string(ca.as_str()), line, &text),
        None if option.args.is_empty() => b.note(
            line,
            &text,
            "kubewire checks TLS upstreams against the system's roots unless forward.tls_ca_file is set",
        ),
        None => {}
    }
}

/// A server block after the first, for zones whose names go to their own
/// upstreams (`corp.example:53 { forward . 10.0.0.1 }`): kube-dns's
/// stubDomains written as CoreDNS blocks, and kubewire's
/// `forward.stub_domains`. The first block's other settings apply to these
/// zones too; anything else in the block is listed as not translated.
pub(super) fn stub_domain_block(b: &mut Builder, block: &ServerBlock) {
    let zones = block.zones();
    let forward = block.root_forward();
    let (Some(forward), false) = (forward, zones.iter().any(String::is_empty)) else {
        b.cannot(
            block.line,
            &block.keys.join(" "),
            "kubewire has one server; a further server block is translated only when it forwards its zones (a stub domain)",
        );
        return;
    };
    let tls_servername = tls_servername_of(forward);
    if let Some(upstreams) = usable_upstreams(b, forward.line, &forward.args[1..], tls_servername) {
        for zone in &zones {
            b.stub_domains.insert(zone.clone(), upstreams.clone());
        }
    }
    for directive in &block.directives {
        let (line, text) = (directive.line, directive.text());
        if std::ptr::eq(directive, forward) {
            for option in directive
                .block
                .iter()
                .filter(|o| o.name != "tls_servername")
            {
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
