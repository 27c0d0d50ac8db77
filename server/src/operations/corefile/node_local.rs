//! NodeLocal DNSCache's Corefile, as kubewire's node-local mode.

use super::*;

/// NodeLocal DNSCache's placeholders that `node-cache` fills at start.
pub(super) const PILLAR_CLUSTER_DNS: &str = "__PILLAR__CLUSTER__DNS__";

pub(super) const PILLAR_UPSTREAM_SERVERS: &str = "__PILLAR__UPSTREAM__SERVERS__";

pub(super) const PILLAR_LOCAL_DNS: &str = "__PILLAR__LOCAL__DNS__";

/// A further block's `cache`: kubewire has one cache for every forwarded
/// name, so it keeps the first cache's settings (line `from`) but takes the
/// shorter of each TTL cap, so that no zone's answers live longer than its
/// block allowed (NodeLocal DNSCache caches cluster NXDOMAINs 5 s, the rest
/// 30 s: kubewire then caches every NXDOMAIN 5 s).
fn tighter_caps(b: &mut Builder, directive: &Directive, from: usize) {
    let mut other = Builder::new(&b.origin);
    cache(&mut other, directive);
    let (line, text) = (directive.line, directive.text());
    let mut kept = true;
    for key in ["cache.max_ttl_s", "cache.denial_max_ttl_s"] {
        let theirs = other.values.get(key).and_then(|(v, _)| v.as_integer());
        let ours = b.values.get(key).and_then(|(v, _)| v.as_integer());
        if let (Some(theirs), Some(ours)) = (theirs, ours)
            && theirs < ours
        {
            b.set(key, toml::Value::Integer(theirs), line, &text);
            kept = false;
        }
    }
    let why = if kept {
        format!("kubewire has one cache for every forwarded name; the cache of line {from} applies")
    } else {
        format!(
            "kubewire has one cache for every forwarded name: the cache of line {from}, with this block's shorter TTL caps"
        )
    };
    b.note(line, &text, &why);
}

/// NodeLocal DNSCache's Corefile: no `kubernetes` anywhere, `bind`, and
/// zone blocks (the cluster zone, the reverse zones) that forward to
/// kube-dns with `force_tcp`.
pub(super) fn is_node_local(blocks: &[ServerBlock]) -> bool {
    let no_kubernetes = blocks
        .iter()
        .all(|b| b.directives.iter().all(|d| d.name != "kubernetes"));
    let forwards_a_zone_over_tcp = blocks.iter().any(|block| {
        !block.zones().iter().any(String::is_empty)
            && block
                .root_forward()
                .is_some_and(|f| f.block.iter().any(|o| o.name == "force_tcp"))
    });
    // node-cache binds its link-local address; a CoreDNS that only forwards
    // a stub zone over TCP does not.
    let binds = blocks
        .iter()
        .any(|b| b.directives.iter().any(|d| d.name == "bind"));
    no_kubernetes && forwards_a_zone_over_tcp && binds
}

/// NodeLocal DNSCache's Corefile as kubewire's node-local mode with the
/// cluster zones forwarded (`cluster_names = "forward"`): the zone blocks
/// that forward over TCP become `dns.zones` and their upstream the cluster
/// upstream; the `.` block's forward becomes `forward.to`; `bind` gives the
/// addresses kubewire puts on its interface and serves.
pub(super) fn node_local(b: &mut Builder, blocks: &[ServerBlock]) {
    let first_line = blocks.first().map_or(1, |block| block.line);
    b.set(
        "node_local.enabled",
        toml::Value::Boolean(true),
        first_line,
        "NodeLocal DNSCache's Corefile",
    );
    b.set(
        "node_local.cluster_names",
        string("forward"),
        first_line,
        "zone blocks forwarded to kube-dns, as node-cache does",
    );
    let mut zones: Vec<String> = Vec::new();
    let mut cluster_upstreams: Option<(Vec<String>, usize)> = None;
    let mut addresses: Vec<String> = Vec::new();
    let mut listen: Vec<String> = Vec::new();
    let mut cache_from: Option<usize> = None;
    // The root block's cache wins: kubewire has one cache for every
    // forwarded name.
    let ordered = blocks
        .iter()
        .filter(|block| block.zones().iter().any(String::is_empty))
        .chain(
            blocks
                .iter()
                .filter(|block| !block.zones().iter().any(String::is_empty)),
        );
    for block in ordered {
        let block_zones = block.zones();
        let root = block_zones.iter().any(String::is_empty);
        let port = block.port();
        let block_forward = block.root_forward();
        if !root {
            zones.extend(block_zones.iter().cloned());
        }
        for directive in &block.directives {
            let (line, text) = (directive.line, directive.text());
            if server_directive(b, directive) {
                continue;
            }
            match directive.name.as_str() {
                "bind" => {
                    for host in &directive.args {
                        let host = if host == PILLAR_LOCAL_DNS {
                            b.note(line, host, "node-cache's link-local address; kubewire's default, 169.254.20.10");
                            "169.254.20.10"
                        } else {
                            host.as_str()
                        };
                        if host
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_unspecified())
                        {
                            b.cannot(line, host, "kubewire puts its addresses on an interface, and this is none; name the link-local address (169.254.20.10)");
                            continue;
                        }
                        if host.parse::<std::net::IpAddr>().is_err() {
                            b.cannot(line, host, "not an IP address: put the address here first (for __PILLAR__DNS__SERVER__, kube-dns's ClusterIP)");
                            continue;
                        }
                        if !addresses.iter().any(|a| a == host) {
                            addresses.push(host.to_string());
                        }
                        let bracketed = if host.contains(':') {
                            format!("[{host}]")
                        } else {
                            host.to_string()
                        };
                        let address = format!("{bracketed}:{port}");
                        if !listen.contains(&address) {
                            listen.push(address);
                        }
                    }
                }
                "cache" => match cache_from {
                    None => {
                        cache(b, directive);
                        cache_from = Some(line);
                    }
                    Some(from) => tighter_caps(b, directive, from),
                },
                "forward" if block_forward.is_some_and(|f| std::ptr::eq(f, directive)) => {
                    let upstreams: Vec<String> = directive.args[1..].to_vec();
                    if root {
                        let mut outside = directive.clone();
                        for arg in &mut outside.args[1..] {
                            if arg == PILLAR_UPSTREAM_SERVERS {
                                b.note(line, arg, "node-cache fills it from the node's /etc/resolv.conf; so does kubewire");
                                *arg = "/etc/resolv.conf".to_string();
                            }
                        }
                        forward(b, &outside);
                        continue;
                    }
                    for option in &directive.block {
                        if option.name == "force_tcp" {
                            b.note(
                                option.line,
                                &option.text(),
                                "kubewire always asks the cluster upstreams over TCP",
                            );
                        } else {
                            b.cannot(
                                option.line,
                                &option.text(),
                                "an option of the cluster zones' forward; not translated",
                            );
                        }
                    }
                    match &cluster_upstreams {
                        None => cluster_upstreams = Some((upstreams, line)),
                        Some((first, _)) if *first == upstreams => {}
                        Some((_, first_line)) => b.cannot(
                            line,
                            &text,
                            &format!("kubewire has one set of cluster upstreams for every cluster zone; line {first_line}'s apply"),
                        ),
                    }
                }
                _ => b.cannot(line, &text, "not translated in node-local mode"),
            }
        }
        if root && block_forward.is_none() {
            b.note(
                block.line,
                &block.keys.join(" "),
                "no forward: names outside the cluster zones get REFUSED",
            );
        }
    }
    if let Some((upstreams, line)) = cluster_upstreams {
        if upstreams.iter().all(|u| u == PILLAR_CLUSTER_DNS) {
            b.note(
                line,
                PILLAR_CLUSTER_DNS,
                "node-cache fills it from the kube-dns-upstream Service; kubewire reads that Service's address from its KUBE_DNS_UPSTREAM_SERVICE_HOST variable (node_local.upstream_service)",
            );
        } else {
            let list = upstreams
                .iter()
                .filter(|u| *u != PILLAR_CLUSTER_DNS)
                .map(|u| string(u.as_str()))
                .collect();
            b.set(
                "node_local.cluster_upstreams",
                toml::Value::Array(list),
                line,
                "the cluster zones' forward",
            );
        }
    }
    b.set(
        "dns.zones",
        toml::Value::Array(zones.iter().map(|z| string(z.as_str())).collect()),
        first_line,
        "the zone blocks forwarded to kube-dns",
    );
    if addresses.is_empty() {
        b.note(
            first_line,
            "bind",
            "no bind address: kubewire's default, 169.254.20.10",
        );
        addresses.push("169.254.20.10".into());
        listen.push("169.254.20.10:53".into());
    }
    b.set(
        "node_local.addresses",
        toml::Value::Array(addresses.iter().map(|a| string(a.as_str())).collect()),
        first_line,
        "bind",
    );
    b.set(
        "dns.listen",
        toml::Value::Array(listen.iter().map(|a| string(a.as_str())).collect()),
        first_line,
        "bind and the blocks' ports",
    );
    judge_cache_disables(b, false);
}
