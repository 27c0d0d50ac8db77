//! Every Corefile input of CoreDNS's own setup tests for the plugins
//! kubewire translates (`cache`, `forward`, `kubernetes`, `autopath`,
//! `loop`), run through the translator. The inputs are data
//! (`coredns_setup_tests.txt`, with the CoreDNS commit they came from);
//! each must end one of three ways:
//! - a valid kubewire config, where CoreDNS accepts it;
//! - a "not translated" line, for what kubewire does not have (valid
//!   config otherwise);
//! - an error, where CoreDNS refuses it too (or at least a "not
//!   translated" line: never a clean translation of what CoreDNS refuses).
#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

const DATA: &str = include_str!("coredns_setup_tests.txt");

/// Files the CoreDNS tests create before parsing (the data file's header).
const FILES: &[(&str, &str)] = &[
    (
        "resolv.conf",
        "nameserver 10.10.255.252\nnameserver 10.10.255.253",
    ),
    (
        "resolv-ipv6.conf",
        "nameserver 0388:d254:7aec:6892:9f7f:e93b:5806:1b0f%en0",
    ),
    ("empty.conf", "# nameserver 1.1.1.1\n# nameserver 1.0.0.1"),
    ("null.conf", ""),
    (
        "autopath-resolv.conf",
        "nameserver 1.2.3.4\ndomain foo.com\nsearch bar.com baz.com\noptions ndots:5\n",
    ),
];

struct Case<'a> {
    label: &'a str,
    coredns_accepts: bool,
    needs_file: Option<&'a str>,
    input: &'a str,
}

fn cases() -> Vec<Case<'static>> {
    let mut records = DATA.split("\n%%\n");
    // The header.
    records.next();
    records
        .filter(|record| !record.trim().is_empty())
        .map(|record| {
            let (label, rest) = record.split_once('\n').unwrap();
            let (expect, input) = rest.split_once('\n').unwrap_or((rest, ""));
            let mut words = expect.split_whitespace();
            assert_eq!(words.next(), Some("expect:"), "{label}");
            let coredns_accepts = match words.next() {
                Some("ok") => true,
                Some("error") => false,
                other => panic!("{label}: expect {other:?}"),
            };
            let needs_file = match (words.next(), words.next()) {
                (Some("needs-file:"), Some(path)) => Some(path),
                (None, _) => None,
                other => panic!("{label}: {other:?}"),
            };
            Case {
                label: label.trim_start_matches("# "),
                coredns_accepts,
                needs_file,
                input: input.strip_suffix("%%").unwrap_or(input),
            }
        })
        .collect()
}

/// A directive alone is put in a root server block, as CoreDNS's test
/// controller reads it; a whole server block stays as it is.
fn corefile(input: &str) -> String {
    let first_word = input.split_whitespace().next().unwrap_or("");
    if first_word.contains(['.', ':']) {
        input.to_string()
    } else {
        format!(".:53 {{\n{input}\n}}\n")
    }
}

#[test]
fn every_coredns_setup_test_input_translates_or_says_why() {
    let dir = std::env::temp_dir().join(format!("kubewire-coredns-setup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, contents) in FILES {
        std::fs::write(dir.join(name), contents).unwrap();
    }
    let cases = cases();
    assert!(cases.len() > 250, "{} cases read", cases.len());
    let (mut clean, mut noted, mut refused) = (0, 0, 0);
    let mut wrong = Vec::new();
    for case in &cases {
        let mut input = case.input.to_string();
        if let Some(file) = case.needs_file {
            // kubewire reads resolv.conf paths as absolute paths.
            input = input.replace(file, &dir.join(file).display().to_string());
        }
        match (
            translate("Corefile", &corefile(&input)),
            case.coredns_accepts,
        ) {
            (Ok(t), _) if !t.untranslated.is_empty() => noted += 1,
            (Ok(_), true) => clean += 1,
            (Err(_), false) => refused += 1,
            (Ok(t), false) => wrong.push(format!(
                "{}: CoreDNS refuses it, but it translates cleanly:\n{input}\n---\n{}",
                case.label, t.toml
            )),
            (Err(error), true) => wrong.push(format!(
                "{}: CoreDNS accepts it, but: {error}\n{input}",
                case.label
            )),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        wrong.is_empty(),
        "{} of {} inputs end wrongly:\n\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n\n")
    );
    // Each way is taken, so the table tests all three.
    assert!(
        clean > 0 && noted > 0 && refused > 0,
        "{clean} {noted} {refused}"
    );
}
