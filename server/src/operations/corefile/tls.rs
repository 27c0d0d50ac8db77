//! `tls://` and `https://` server blocks: CoreDNS's DNS over TLS and over
//! HTTPS. kubewire serves them from the answers of its one server (the
//! first block), so what translates is the block's address and its `tls`
//! directive; a directive of its own that the first block does not share
//! is listed as not translated.

use super::{Builder, Directive, ServerBlock, address, server_directive, string};

/// The served schemes: key prefix, config key, default port.
const SCHEMES: [(&str, &str, &str); 2] = [
    ("tls://", "tls.listen", "853"),
    ("https://", "tls.https_listen", "443"),
];

/// The scheme every key of `block` has, if it is one of [`SCHEMES`].
fn scheme(block: &ServerBlock) -> Option<(&'static str, &'static str, &'static str)> {
    SCHEMES.into_iter().find(|(prefix, ..)| {
        !block.keys.is_empty() && block.keys.iter().all(|key| key.starts_with(prefix))
    })
}

/// Whether `block` is a `tls://` or an `https://` block.
pub(super) fn is_tls_block(block: &ServerBlock) -> bool {
    scheme(block).is_some()
}

pub(super) fn tls_block(b: &mut Builder, block: &ServerBlock, first: &ServerBlock) {
    let Some((prefix, listen_key, default_port)) = scheme(block) else {
        return;
    };
    let port = block
        .keys
        .first()
        .and_then(|key| key.strip_prefix(prefix))
        .and_then(|rest| rest.rsplit_once(':'))
        .map_or(default_port, |(_, port)| port);
    let bound: Vec<String> = block
        .directives
        .iter()
        .filter(|d| d.name == "bind")
        .flat_map(|d| d.args.iter())
        .map(|host| match host.contains(':') {
            true => format!("[{host}]:{port}"),
            false => format!("{host}:{port}"),
        })
        .collect();
    let listen = if bound.is_empty() {
        vec![address(&format!(":{port}"))]
    } else {
        bound
    };
    // A second block of the scheme (another bind, say) adds its addresses.
    let mut addresses: Vec<toml::Value> = match b.values.get(listen_key) {
        Some((toml::Value::Array(earlier), _)) => earlier.clone(),
        _ => Vec::new(),
    };
    addresses.extend(listen.into_iter().map(string));
    b.set(
        listen_key,
        toml::Value::Array(addresses),
        block.line,
        &block.keys.join(" "),
    );
    let mut certificate = false;
    for directive in &block.directives {
        match directive.name.as_str() {
            "bind" => {}
            "tls" => certificate |= tls_directive(b, directive),
            _ if first.directives.iter().any(|d| same(d, directive)) => {}
            _ if server_directive_text(directive) => {}
            _ => b.cannot(
                directive.line,
                &directive.text(),
                "kubewire serves DNS over TLS and HTTPS from the first block's answers; a tls:// or https:// block's own plugins are not translated",
            ),
        }
    }
    if !certificate {
        b.refuse(
            block.line,
            &block.keys.join(" "),
            "a tls:// or https:// block without `tls CERT KEY` serves no TLS; CoreDNS would serve plain DNS or HTTP there, kubewire needs the certificate",
        );
    }
}

/// `tls CERT KEY [CA] { client_auth …; keylog … }`; whether it gave the
/// certificate.
fn tls_directive(b: &mut Builder, directive: &Directive) -> bool {
    let line = directive.line;
    let text = directive.text();
    let (cert, key, ca) = match directive.args.as_slice() {
        [cert, key] => (cert, key, None),
        [cert, key, ca] => (cert, key, Some(ca)),
        _ => {
            b.cannot(
                line,
                &text,
                "kubewire takes certificates from files: `tls CERT KEY [CA]` (ACME is not supported)",
            );
            return false;
        }
    };
    let earlier = |b: &Builder, key: &str| b.values.get(key).map(|(value, _)| value.clone());
    for (key, file) in [("tls.cert_file", cert), ("tls.key_file", key)] {
        if earlier(b, key).is_some_and(|v| v.as_str() != Some(file.as_str())) {
            b.cannot(
                line,
                &text,
                "kubewire serves one certificate for DNS over TLS and HTTPS; the first block's is kept",
            );
            return true;
        }
    }
    b.set("tls.cert_file", string(cert.as_str()), line, &text);
    b.set("tls.key_file", string(key.as_str()), line, &text);
    let mut client_auth = "nocert";
    for option in &directive.block {
        match (option.name.as_str(), option.args.as_slice()) {
            ("client_auth", [mode]) => client_auth = mode,
            _ => b.cannot(
                option.line,
                &option.text(),
                "not supported by kubewire's DNS over TLS",
            ),
        }
    }
    match (client_auth, ca) {
        ("require_and_verify", Some(ca)) => {
            b.set("tls.client_ca_file", string(ca.as_str()), line, &text)
        }
        ("nocert", Some(_)) => b.note(
            line,
            &text,
            "a CA without client_auth asks no client certificate in CoreDNS, nor in kubewire",
        ),
        ("nocert", None) => {}
        (mode, _) => b.cannot(
            line,
            &format!("client_auth {mode}"),
            "kubewire asks no client certificate, or requires one chaining to the CA (client_auth require_and_verify with CA)",
        ),
    }
    true
}

/// The directives every block may repeat (`errors`, `health`, …); checked
/// on a scratch builder, so that a tls:// block's copy adds no second value.
fn server_directive_text(directive: &Directive) -> bool {
    server_directive(&mut Builder::new("scratch"), directive)
}

/// The same directive, nested blocks included.
fn same(a: &Directive, b: &Directive) -> bool {
    a.name == b.name
        && a.args == b.args
        && a.block.len() == b.block.len()
        && a.block.iter().zip(&b.block).all(|(x, y)| same(x, y))
}
