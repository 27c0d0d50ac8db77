//! Kubernetes label selectors, parsed and matched here, for sources that
//! the API server does not filter: the manifests. The grammar is the API
//! server's: requirements separated by commas, each `key`, `!key`,
//! `key=value`, `key==value`, `key!=value`, `key in (a,b)` or
//! `key notin (a,b)`.

use std::collections::BTreeMap;

/// What a selector may say, for error messages.
const GRAMMAR: &str =
    "write key, !key, key=value, key!=value, key in (a,b) or key notin (a,b), separated by commas";

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    Absent(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses a selector such as `app=web,tier!=db,env in (a,b),!canary`.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text)? {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(requirement(part)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::Absent(key) => !labels.contains_key(key),
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
        })
    }
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("{text:?}: a \")\" without its \"(\"; {GRAMMAR}"))?;
            }
            ',' if depth == 0 => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{text:?}: a \"(\" is never closed; {GRAMMAR}"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn requirement(part: &str) -> Result<Requirement, String> {
    let bad = |why: &str| format!("{part:?}: {why}; {GRAMMAR}");
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::Absent(
            key_of(key.trim()).map_err(|e| bad(&e))?,
        ));
    }
    if let Some((key, value)) = part.split_once("!=") {
        let (key, value) = (key_of(key.trim()), value_of(value.trim()));
        return Ok(Requirement::NotIn(
            key.map_err(|e| bad(&e))?,
            vec![value.map_err(|e| bad(&e))?],
        ));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        let (key, value) = (key_of(key.trim()), value_of(value.trim()));
        return Ok(Requirement::In(
            key.map_err(|e| bad(&e))?,
            vec![value.map_err(|e| bad(&e))?],
        ));
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = key_of(words.next().unwrap_or_default()).map_err(|e| bad(&e))?;
    let Some(rest) = words.next().map(str::trim) else {
        return Ok(Requirement::Exists(key));
    };
    let (negated, list) = if let Some(list) = rest.strip_prefix("notin") {
        (true, list)
    } else if let Some(list) = rest.strip_prefix("in") {
        (false, list)
    } else {
        return Err(bad("unknown operator"));
    };
    let list = list
        .trim()
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| bad("the values go in parentheses"))?;
    let values = list
        .split(',')
        .map(|v| value_of(v.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    Ok(if negated {
        Requirement::NotIn(key, values)
    } else {
        Requirement::In(key, values)
    })
}

fn key_of(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 317
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} is not a label key"))
    }
}

fn value_of(text: &str) -> Result<String, String> {
    let valid = text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} is not a label value"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_matches_as_the_api_server_does() {
        let web = labels(&[("app", "web"), ("tier", "front"), ("env", "prod")]);
        let db = labels(&[("app", "db"), ("tier", "back")]);
        let cases = [
            ("", true, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("env", true, false),
            ("!env", false, true),
            ("tier in (front, middle)", true, false),
            ("tier notin (front)", false, true),
            ("app=web,env=prod", true, false),
            ("app in (web,db),!canary", true, true),
        ];
        for (text, on_web, on_db) in cases {
            let selector = LabelSelector::parse(text).unwrap();
            assert_eq!(selector.matches(&web), on_web, "{text} on web");
            assert_eq!(selector.matches(&db), on_db, "{text} on db");
        }
    }

    #[test]
    fn bad_selectors_say_what_is_allowed() {
        for text in ["app in web", "app in (web", "app ~ web", "a b=c", "=web"] {
            let error = LabelSelector::parse(text).unwrap_err();
            assert!(error.contains("key=value"), "{text}: {error}");
        }
    }
}
