//! `kubernetes` and `k8s_external`.

use super::*;

/// `fallthrough [ZONES]` as a list of zones: none given means every zone
/// (`"."`).
pub(super) fn fallthrough_zones<'a>(zones: impl Iterator<Item = &'a str>) -> toml::Value {
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
pub(super) fn k8s_external(b: &mut Builder, directive: &Directive, block_keys: &[String]) {
    let line = directive.line;
    let text = directive.text();
    let zone_of = |z: &str| split_key(z).0.trim_end_matches('.').to_string();
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

pub(super) fn kubernetes(b: &mut Builder, directive: &Directive) {
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
            ("kubeconfig", Some(path)) if option.args.len() <= 2 => {
                b.set("source.kubeconfig", string(path), option_line, &option_text);
                if let Some(context) = option.args.get(1) {
                    b.cannot(
                        option_line,
                        context,
                        "kubewire uses the kubeconfig's current context",
                    );
                }
            }
            ("kubeconfig", _) => b.refuse(
                option_line,
                &option_text,
                "kubeconfig takes a file and an optional context; CoreDNS refuses more too",
            ),
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
