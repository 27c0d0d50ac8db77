//! `cache`: TTL caps, capacities, prefetch and serve_stale.

use super::*;

/// `serve_stale [DURATION] [immediate [TTL [RECHECK]] | verify [TIMEOUT [TTL [RECHECK]]]]`,
/// read as CoreDNS's cache plugin reads it.
pub(super) fn serve_stale(b: &mut Builder, option: &Directive, args: &[&str]) {
    let (line, text) = (option.line, option.text());
    let refuse = |b: &mut Builder, why: &str| {
        b.refuse(line, &text, &format!("{why}; CoreDNS refuses it too"))
    };
    if args.len() > 5 {
        return refuse(b, "serve_stale takes at most five arguments");
    }
    let seconds = |n: u64| toml::Value::Integer(n as i64);
    let Some(window_ms) = args.first().map_or(Some(3_600_000), |d| go_duration_ms(d)) else {
        return refuse(b, "the stale window is not a duration (such as 1h)");
    };
    let mode = args
        .get(1)
        .map_or("immediate".to_string(), |m| m.to_ascii_lowercase());
    if mode != "immediate" && mode != "verify" {
        return refuse(b, "the refresh mode is immediate or verify");
    }
    let verify = mode == "verify";
    // After the mode: verify's timeout, then the TTL and the recheck.
    let (timeout, ttl, recheck) = if verify {
        (args.get(2), args.get(3), args.get(4))
    } else if args.len() > 4 {
        return refuse(b, "serve_stale immediate takes at most four arguments");
    } else {
        (None, args.get(2), args.get(3))
    };
    if timeout.is_some_and(|t| go_duration_ms(t).is_none()) {
        return refuse(b, "the verify timeout is not a duration");
    }
    let ttl_s = match ttl.map(|t| go_duration_ms(t)) {
        None => 0,
        Some(Some(ms)) if ms % 1000 == 0 && ms / 1000 <= u64::from(u32::MAX) => ms / 1000,
        Some(_) => {
            return refuse(
                b,
                "the stale answers' TTL is a whole number of seconds in the DNS TTL range",
            );
        }
    };
    if recheck.is_some_and(|r| go_duration_ms(r).is_none_or(|ms| ms > 300_000)) {
        return refuse(b, "the failure recheck is a duration of at most 5m");
    }
    b.set(
        "cache.serve_stale_s",
        seconds(window_ms.div_ceil(1000)),
        line,
        &text,
    );
    b.set("cache.serve_stale_mode", string(mode.as_str()), line, &text);
    b.set("cache.stale_ttl_s", seconds(ttl_s), line, &text);
    if let Some(timeout) = timeout {
        b.cannot(
            line,
            timeout,
            "kubewire waits forward.timeout_ms for a verify; there is no separate timeout",
        );
    }
    if let Some(recheck) = recheck {
        b.cannot(
            line,
            recheck,
            "kubewire has no failure recheck interval for stale answers",
        );
    }
}

/// `cache [TTL] [ZONES…] { options }`. Cluster answers are never cached
/// (they are live from the watch); the cache holds forwarded answers.
pub(super) fn cache(b: &mut Builder, directive: &Directive) {
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
            ("serve_stale", rest) => {
                serve_stale(b, option, rest);
                true
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

/// `cache { disable success|denial ZONES }`, judged once the cluster zones
/// are known: nothing to do for zones that kubewire answers live
/// (`cluster_live`), not translated otherwise.
pub(super) fn judge_cache_disables(b: &mut Builder, cluster_live: bool) {
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
        if cluster_live && !zones.is_empty() && zones.iter().all(in_cluster) {
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
}
