//! Reading a config: TOML parsed with each key's place kept, unknown keys
//! named with a suggestion, and every value checked, so an error names the
//! file, the line, the key and what is allowed.

use super::reference::{KEYS, env_var, find_key, keys_of, sections};
use super::*;
use std::collections::HashMap;
use std::ops::Range;

/// A configuration error. Its text is whole and ready to print (place,
/// key, problem and what is allowed, with the cause's own words where there
/// is one); the cause itself stays reachable as its `source`, and tells
/// only those words, so that `failure::Chain` does not tell them twice.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    message: String,
    #[source]
    cause: Option<ConfigCause>,
}

/// What lies under a [`ConfigError`], where something does: the typed
/// error, shown as the words the [`ConfigError`] already quotes.
#[derive(Debug, thiserror::Error)]
pub enum ConfigCause {
    /// The file could not be read.
    #[error("{0}")]
    Read(std::io::Error),
    /// The text is not valid TOML, or a value has the wrong type (shown
    /// as its message, without toml's snippet of the file).
    #[error("{}", .0.message().trim_end())]
    Toml(toml::de::Error),
}

impl From<std::io::Error> for ConfigCause {
    fn from(error: std::io::Error) -> ConfigCause {
        ConfigCause::Read(error)
    }
}

impl From<toml::de::Error> for ConfigCause {
    fn from(error: toml::de::Error) -> ConfigCause {
        ConfigCause::Toml(error)
    }
}

impl ConfigError {
    /// An error that is only its text.
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError {
            message: message.into(),
            cause: None,
        }
    }

    fn caused(message: impl Into<String>, cause: impl Into<ConfigCause>) -> ConfigError {
        ConfigError {
            message: message.into(),
            cause: Some(cause.into()),
        }
    }
}

/// Where each key sits in the file.
#[derive(Debug, Default)]
struct Spans {
    origin: String,
    text: String,
    keys: HashMap<String, Range<usize>>,
}

impl Spans {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn at(&self, offset: usize) -> String {
        format!("{}:{}", self.origin, self.line_of(offset))
    }

    /// The key whose `key = value` holds `offset`, innermost first.
    fn key_at(&self, offset: usize) -> Option<&str> {
        self.keys
            .iter()
            .filter(|(_, span)| span.contains(&offset))
            .min_by_key(|(_, span)| span.len())
            .map(|(key, _)| key.as_str())
    }

    fn error(&self, key: &str, message: &str) -> ConfigError {
        let place = match self.keys.get(key) {
            Some(span) => self.at(span.start),
            None => match find_key(key).and_then(|s| s.flags.first()) {
                Some(flag) => format!("{flag} (or its KUBEWIRE_ variable)"),
                None => format!("{} (flags or environment)", self.origin),
            },
        };
        let allowed = find_key(key)
            .map(|s| format!(" (allowed: {})", s.allowed))
            .unwrap_or_default();
        ConfigError::new(format!("{place}: {key}: {message}{allowed}"))
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let message = format!(
                "{}: cannot read the config file: {e}; check the path given to --config",
                path.display()
            );
            ConfigError::caused(message, e)
        })?;
        Config::parse(&path.display().to_string(), &text)
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Config, ConfigError> {
        let mut spans = Spans {
            origin: origin.to_string(),
            text: text.to_string(),
            keys: HashMap::new(),
        };
        let document = toml::de::DeTable::parse(text).map_err(|e| {
            let place = e.span().map_or(origin.to_string(), |s| spans.at(s.start));
            let message = format!("{place}: not valid TOML: {}", e.message().trim_end());
            ConfigError::caused(message, e)
        })?;
        for (section_key, section_value) in document.get_ref() {
            let section = section_key.get_ref().as_ref();
            if !sections().contains(&section) {
                return Err(unknown_key(&spans, section_key.span().start, section, None));
            }
            let Some(table) = section_value.get_ref().as_table() else {
                return Err(ConfigError::new(format!(
                    "{}: \"{section}\" must be a table: write [{section}] and its keys below it",
                    spans.at(section_key.span().start)
                )));
            };
            for (key, value) in table {
                let full = format!("{section}.{}", key.get_ref());
                if find_key(&full).is_none() {
                    return Err(unknown_key(&spans, key.span().start, &full, Some(section)));
                }
                if full == "forward.stub_domains"
                    && let Some(zones) = value.get_ref().as_table()
                {
                    refuse_repeated_zones(&spans, zones)?;
                }
                spans
                    .keys
                    .insert(full, key.span().start..value.span().end.max(key.span().end));
            }
        }
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let message = e.message().trim_end().to_string();
            let located = match spans.key_at(offset) {
                Some(key) => spans.error(key, &message).message,
                None => format!("{}: {message}", spans.at(offset)),
            };
            ConfigError::caused(located, e)
        })?;
        config.validate_with(&spans)?;
        Ok(config)
    }

    /// Validates settings given by flags or the environment (no file lines).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(&Spans {
            origin: "configuration".into(),
            ..Spans::default()
        })
    }

    fn validate_with(&self, spans: &Spans) -> Result<(), ConfigError> {
        let fail = |key: &str, message: &str| Err(spans.error(key, message));
        if self.dns.listen.is_empty() {
            return fail("dns.listen", "at least one address is needed");
        }
        if self.dns.zones.is_empty() {
            return fail("dns.zones", "at least one zone is needed");
        }
        self.validate_k8s_external(&fail)?;
        for zone in &self.kubernetes.multicluster {
            if !self.dns.zones.contains(zone) {
                return fail(
                    "kubernetes.multicluster",
                    &format!(
                        "{zone:?} is not one of dns.zones; add it there too, so kubewire is authoritative for it (as CoreDNS requires)"
                    ),
                );
            }
        }
        if let Err(error) = kubewire_answer::selector::LabelSelector::parse(&self.kubernetes.labels)
        {
            return fail("kubernetes.labels", &error);
        }
        if self.dns.ttl_seconds > 3600 {
            return fail(
                "dns.ttl_seconds",
                &format!("{} is too large", self.dns.ttl_seconds),
            );
        }
        match self.source.kind {
            SourceKind::Manifests if self.source.manifests.is_empty() => {
                return fail(
                    "source.manifests",
                    "source.kind is \"manifests\" but no path is given",
                );
            }
            SourceKind::Demo | SourceKind::Manifests if !self.source.kubeconfig.is_empty() => {
                return fail(
                    "source.kubeconfig",
                    "a kubeconfig is only used with source.kind = \"cluster\"",
                );
            }
            _ => {}
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return fail("log.level", &format!("{:?}: {error}", self.log.level));
        }
        if self.tcp.idle_timeout_ms == 0 {
            return fail("tcp.idle_timeout_ms", "must be at least 1");
        }
        if self.tcp.max_connections == 0 {
            return fail("tcp.max_connections", "must be at least 1");
        }
        if let Some(addr) = self.http.debug_addr.0
            && !addr.ip().is_loopback()
            && self.http.debug_token_file.is_empty()
        {
            return fail(
                "http.debug_addr",
                &format!(
                    "{addr} is not a loopback address: set http.debug_token_file too, or listen on 127.0.0.1"
                ),
            );
        }
        if self.http.debug_requests_per_second == 0 {
            return fail("http.debug_requests_per_second", "must be at least 1");
        }
        self.validate_tls(&fail)?;
        if !self.dnstap.to.is_empty()
            && let Err(error) = crate::operations::dnstap::Target::parse(&self.dnstap.to)
        {
            return fail("dnstap.to", &error);
        }
        self.validate_forward(&fail)?;
        self.validate_cache(&fail)?;
        self.validate_node_local(&fail)
    }

    fn validate_tls(
        &self,
        fail: &dyn Fn(&str, &str) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let tls = &self.tls;
        if tls.listen.is_empty() && tls.https_listen.is_empty() {
            return Ok(());
        }
        for key in [
            ("tls.cert_file", &tls.cert_file),
            ("tls.key_file", &tls.key_file),
        ] {
            if key.1.is_empty() {
                return fail(
                    key.0,
                    "tls.listen or tls.https_listen is set, so a certificate is needed: give tls.cert_file and tls.key_file (PEM files, as a Kubernetes TLS Secret holds)",
                );
            }
        }
        if let Some(addr) = tls.listen.iter().find(|a| self.dns.listen.contains(a)) {
            return fail(
                "tls.listen",
                &format!(
                    "{addr} is also in dns.listen; DNS over TLS needs a port of its own (853)"
                ),
            );
        }
        if let Some(addr) = tls
            .https_listen
            .iter()
            .find(|a| self.dns.listen.contains(a) || tls.listen.contains(a))
        {
            return fail(
                "tls.https_listen",
                &format!(
                    "{addr} is also in dns.listen or tls.listen; DNS over HTTPS needs a port of its own (443)"
                ),
            );
        }
        if tls.https_max_streams == 0 {
            return fail("tls.https_max_streams", "must be at least 1");
        }
        if tls.handshake_timeout_ms == 0 {
            return fail("tls.handshake_timeout_ms", "must be at least 1");
        }
        if tls.reload_check_ms == 0 {
            return fail("tls.reload_check_ms", "must be at least 1");
        }
        Ok(())
    }

    fn validate_node_local(
        &self,
        fail: &dyn Fn(&str, &str) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let n = &self.node_local;
        if self.kubernetes.autopath && n.forwards_cluster_names() {
            return fail(
                "kubernetes.autopath",
                "autopath needs this instance's own pod watch, and node_local.cluster_names = \"forward\" has none; use \"watch\"",
            );
        }
        if !n.enabled {
            return Ok(());
        }
        if n.addresses.is_empty() {
            return fail("node_local.addresses", "at least one address is needed");
        }
        if n.interface.is_empty() || n.interface.len() > 15 || n.interface.contains(['/', ' ', ':'])
        {
            return fail(
                "node_local.interface",
                &format!("{:?} is not an interface name", n.interface),
            );
        }
        if n.check_interval_s == 0 {
            return fail("node_local.check_interval_s", "must be at least 1");
        }
        for address in &n.addresses {
            let served = self.dns.listen.iter().any(|l| {
                l.ip() == *address || (l.ip().is_unspecified() && l.is_ipv4() == address.is_ipv4())
            });
            if !served {
                return fail(
                    "node_local.addresses",
                    &format!(
                        "{address} is not served: add \"{}\" to dns.listen",
                        std::net::SocketAddr::new(*address, 53)
                    ),
                );
            }
        }
        Ok(())
    }

    fn validate_cache(
        &self,
        fail: &dyn Fn(&str, &str) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let c = &self.cache;
        if c.max_ttl_s == 0 {
            return fail("cache.max_ttl_s", "must be at least 1");
        }
        if c.min_ttl_s > c.max_ttl_s {
            return fail("cache.min_ttl_s", "must be at most cache.max_ttl_s");
        }
        if c.denial_max_ttl_s == 0 {
            return fail("cache.denial_max_ttl_s", "must be at least 1");
        }
        if c.denial_min_ttl_s > c.denial_max_ttl_s {
            return fail(
                "cache.denial_min_ttl_s",
                "must be at most cache.denial_max_ttl_s",
            );
        }
        if c.servfail_ttl_s > 300 {
            return fail("cache.servfail_ttl_s", "must be at most 300");
        }
        if c.max_entries == 0 {
            return fail("cache.max_entries", "must be at least 1");
        }
        if c.max_bytes < 65_536 {
            return fail("cache.max_bytes", "must be at least 65536");
        }
        if c.prefetch_window_s == 0 {
            return fail("cache.prefetch_window_s", "must be at least 1");
        }
        if !(10..=90).contains(&c.prefetch_percent) {
            return fail("cache.prefetch_percent", "must be from 10 to 90");
        }
        Ok(())
    }

    fn validate_k8s_external(
        &self,
        fail: &dyn Fn(&str, &str) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let e = &self.k8s_external;
        for zone in &e.zones {
            if self.dns.zones.contains(zone) {
                return fail(
                    "k8s_external.zones",
                    &format!(
                        "{zone:?} is also a cluster zone (dns.zones); give the external zone a name of its own",
                        zone = zone.as_str()
                    ),
                );
            }
        }
        let apex = e.apex.as_bytes();
        if apex.is_empty()
            || apex.len() > 63
            || !apex
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return fail(
                "k8s_external.apex",
                &format!(
                    "{:?} is not one DNS label (letters, digits, '-' or '_', at most 63)",
                    e.apex
                ),
            );
        }
        if e.ttl_seconds > 3600 {
            return fail(
                "k8s_external.ttl_seconds",
                &format!("{} is too large", e.ttl_seconds),
            );
        }
        Ok(())
    }

    fn validate_forward(
        &self,
        fail: &dyn Fn(&str, &str) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let f = &self.forward;
        for (zone, upstreams) in &f.stub_domains {
            if upstreams.is_empty() {
                return fail(
                    "forward.stub_domains",
                    &format!("{:?} has no upstreams", zone.as_str()),
                );
            }
        }
        if f.timeout_ms == 0 {
            return fail("forward.timeout_ms", "must be at least 1");
        }
        if f.max_attempts == 0 {
            return fail("forward.max_attempts", "must be at least 1");
        }
        if f.health_check_ms == 0 {
            return fail("forward.health_check_ms", "must be at least 1");
        }
        if f.max_concurrent_per_core == 0 {
            return fail("forward.max_concurrent_per_core", "must be at least 1");
        }
        let any_tls =
            f.to.iter()
                .chain(f.stub_domains.values().flatten())
                .flat_map(|entry| entry.servers())
                .any(|u| u.protocol == Protocol::Tls);
        if !f.tls_servername.is_empty()
            && rustls::pki_types::ServerName::try_from(f.tls_servername.as_str()).is_err()
        {
            return fail(
                "forward.tls_servername",
                &format!("{:?} is not a DNS name or an IP address", f.tls_servername),
            );
        }
        if any_tls && f.tls_servername.is_empty() {
            return fail(
                "forward.tls_servername",
                "tls:// upstreams need the name their certificate is for",
            );
        }
        if f.force_tcp && f.prefer_udp {
            return fail(
                "forward.prefer_udp",
                "forward.force_tcp and forward.prefer_udp cannot both be true",
            );
        }
        Ok(())
    }

    /// Every setting as `section.key` → value.
    pub fn flatten(&self) -> BTreeMap<String, toml::Value> {
        let mut out = BTreeMap::new();
        if let Ok(toml::Value::Table(sections)) = toml::Value::try_from(self) {
            for (section, table) in sections {
                if let toml::Value::Table(table) = table {
                    for (key, value) in table {
                        out.insert(format!("{section}.{key}"), value);
                    }
                }
            }
        }
        out
    }

    /// The keys whose values differ from `other`'s.
    pub fn changed_keys(&self, other: &Config) -> Vec<&'static str> {
        let (mine, theirs) = (self.flatten(), other.flatten());
        KEYS.iter()
            .filter(|s| mine.get(s.key) != theirs.get(s.key))
            .map(|s| s.key)
            .collect()
    }

    /// The configuration as a TOML file, each key with its documentation.
    pub fn to_documented_toml(&self) -> String {
        let values = self.flatten();
        let mut out = String::from(
            "# kubewire configuration. Flags and KUBEWIRE_* environment variables override it.\n\
             # Keys marked \"live\" change on SIGHUP or when this file changes; the rest need a restart.\n",
        );
        let mut section = "";
        for s in KEYS {
            let (sec, key) = s.key.split_once('.').unwrap_or(("", s.key));
            if sec != section {
                section = sec;
                out.push_str(&format!("\n[{sec}]\n"));
            }
            let live = if s.live { "live" } else { "restart" };
            out.push_str(&format!(
                "# {}\n# Allowed: {}. ({live})\n",
                s.doc, s.allowed
            ));
            if !s.flags.is_empty() {
                let variables: Vec<String> = s.flags.iter().map(|f| env_var(f)).collect();
                out.push_str(&format!(
                    "# Flag: {} (or {}).\n",
                    s.flags.join(", "),
                    variables.join(", ")
                ));
            }
            match values.get(s.key) {
                Some(value) => out.push_str(&format!("{key} = {value}\n")),
                None => out.push_str(&format!("# {key} is unset\n")),
            }
        }
        out
    }
}

/// Zones of `forward.stub_domains` that are one name written twice
/// (`Corp.example` and `corp.example.`): TOML sees two keys, kubewire one
/// zone, and one list of upstreams would be lost without a word.
fn refuse_repeated_zones(spans: &Spans, zones: &toml::de::DeTable<'_>) -> Result<(), ConfigError> {
    let mut seen: Vec<(DnsName, &str)> = Vec::new();
    for (zone, _) in zones {
        let text = zone.get_ref().as_ref();
        let Ok(name) = text.parse::<DnsName>() else {
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(held, _)| *held == name) {
            return Err(ConfigError::new(format!(
                "{}: forward.stub_domains: {text:?} and {first:?} are the same zone; give its upstreams once",
                spans.at(zone.span().start)
            )));
        }
        seen.push((name, text));
    }
    Ok(())
}

fn unknown_key(spans: &Spans, offset: usize, key: &str, section: Option<&str>) -> ConfigError {
    let (leaf, candidates): (&str, Vec<String>) = match section {
        Some(_) => (
            key.split_once('.').map_or(key, |(_, k)| k),
            KEYS.iter().map(|s| s.key.to_string()).collect(),
        ),
        None => (key, sections().iter().map(|s| s.to_string()).collect()),
    };
    let suggestion = candidates
        .iter()
        .map(|candidate| {
            let candidate_leaf = candidate.split_once('.').map_or(&candidate[..], |(_, k)| k);
            let score = strsim::jaro_winkler(leaf, candidate_leaf)
                .max(strsim::jaro_winkler(key, candidate));
            (score, candidate)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| format!("; did you mean \"{candidate}\"?"))
        .unwrap_or_default();
    let listing = match section {
        Some(section) => format!(
            " The keys of [{section}] are: {}",
            keys_of(section).join(", ")
        ),
        None => format!(" The sections are: {}", sections().join(", ")),
    };
    let what = if section.is_some() { "key" } else { "section" };
    ConfigError::new(format!(
        "{}: unknown {what} \"{key}\"{suggestion}{}",
        spans.at(offset),
        if suggestion.is_empty() {
            format!(".{listing}")
        } else {
            listing
        }
    ))
}
