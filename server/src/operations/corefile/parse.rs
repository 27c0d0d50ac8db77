//! Reading a Corefile: server blocks of directives, each with its line.

use super::CorefileError;

#[derive(Debug, Clone)]
pub(super) struct Directive {
    pub(super) line: usize,
    pub(super) name: String,
    pub(super) args: Vec<String>,
    pub(super) block: Vec<Directive>,
}

impl Directive {
    pub(super) fn text(&self) -> String {
        std::iter::once(self.name.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Debug)]
pub(super) struct ServerBlock {
    pub(super) line: usize,
    pub(super) keys: Vec<String>,
    pub(super) directives: Vec<Directive>,
}

/// A server block key (`dns://cluster.local.:53`, `.:5353`, `example.org`)
/// as its zone, as written, and its port (53 when none is given).
pub(super) fn split_key(key: &str) -> (&str, &str) {
    let key = key.strip_prefix("dns://").unwrap_or(key);
    key.rsplit_once(':').unwrap_or((key, "53"))
}

impl ServerBlock {
    /// The block's zones, without port or trailing dot (the root is "").
    pub(super) fn zones(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|key| split_key(key).0.trim_end_matches('.').to_string())
            .collect()
    }

    /// The port of the block's first key (53 when none is given).
    pub(super) fn port(&self) -> &str {
        self.keys.first().map_or("53", |key| split_key(key).1)
    }

    /// The block's `forward . UPSTREAMS…`, if it has one.
    pub(super) fn root_forward(&self) -> Option<&Directive> {
        self.directives.iter().find(|d| {
            d.name == "forward" && d.args.len() > 1 && d.args[0].trim_end_matches('.').is_empty()
        })
    }
}

/// Splits into lines of tokens, with `{` and `}` as tokens of their own.
pub(super) fn tokenize(text: &str) -> Vec<(usize, Vec<String>)> {
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

pub(super) fn parse(origin: &str, text: &str) -> Result<Vec<ServerBlock>, CorefileError> {
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
pub(super) fn parse_directives(
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
pub(super) fn go_duration_ms(text: &str) -> Option<u64> {
    let mut total_ns: f64 = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    // As Go's time.ParseDuration: a bare zero needs no unit.
    if rest == "0" {
        return Some(0);
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
