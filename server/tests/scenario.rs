//! A differential check of `kubewire-bench scenario`: kubewire serving the
//! generated manifests must give, for every query of the generated mix, the
//! answer that the generated zone file (what NSD and Knot serve in the
//! comparison) gives. Then the bench runs that mix against kubewire with no
//! loss and no mismatch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hickory_proto::rr::{RData, RecordType};
use kubewire_bench::load::{LoadConfig, parse_query_file, run};
use kubewire_bench::scenario::{ScenarioConfig, write};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// The zone file as owner name → (type, rdata text) records.
fn zone_records(text: &str) -> HashMap<String, Vec<(String, String)>> {
    let mut records: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('$') {
            continue;
        }
        let mut fields: Vec<&str> = line.split_whitespace().collect();
        let owner = fields.remove(0);
        // Optional TTL, then IN.
        if fields[0].chars().all(|c| c.is_ascii_digit()) {
            fields.remove(0);
        }
        assert_eq!(fields.remove(0), "IN", "{line}");
        let rtype = fields.remove(0).to_string();
        let name = if owner == "@" {
            "cluster.local.".to_string()
        } else {
            format!("{owner}.cluster.local.")
        };
        records
            .entry(name)
            .or_default()
            .push((rtype, fields.join(" ")));
    }
    records
}

fn rdata_text(data: &RData) -> String {
    match data {
        RData::A(a) => a.0.to_string(),
        RData::SRV(srv) => format!(
            "{} {} {} {}",
            srv.priority, srv.weight, srv.port, srv.target
        ),
        other => other.to_string(),
    }
}

/// The host's UDP `RcvbufErrors` (datagrams dropped for a full socket
/// receive buffer), from `/proc/net/snmp`.
fn udp_receive_buffer_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

#[test]
fn kubewire_answers_the_scenario_as_its_zone_file_does() {
    let dir = tempdir("scenario");
    let config = ScenarioConfig {
        services: 60,
        headless_every: 5,
        endpoints_per_headless: 12,
        pods: 20,
        namespaces: 3,
        queries: 800,
        seed: 7,
    };
    let [manifests, zone, queries] = write(&config, &dir).unwrap();
    let zone = zone_records(&std::fs::read_to_string(zone).unwrap());
    let queries_text = std::fs::read_to_string(&queries).unwrap();
    let mut server = Server::start(&["--manifests", manifests.to_str().unwrap(), "--cores", "2"]);

    let mut distinct = BTreeSet::new();
    for line in queries_text.lines() {
        let mut parts = line.split_whitespace();
        distinct.insert((
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        ));
    }
    let mut checked = HashMap::<&str, usize>::new();
    for (name, qtype) in &distinct {
        let record_type: RecordType = qtype.parse().unwrap();
        let mut reply = server.udp(name, record_type);
        if reply.metadata.truncation {
            // As a stub resolver does: too big for 512 bytes, so over TCP.
            reply = server.tcp(name, record_type);
            *checked.entry("over TCP").or_default() += 1;
        }
        let fqdn = format!("{name}.");
        if qtype == "PTR" {
            // Reverse names are not in the zone file; kubewire owns them.
            assert_eq!(rcode(&reply), 0, "{name} PTR");
            assert_eq!(reply.answers.len(), 1, "{name} PTR");
            *checked.entry("PTR").or_default() += 1;
            continue;
        }
        match zone.get(&fqdn) {
            None => {
                assert_eq!(rcode(&reply), 3, "{name} {qtype} should be NXDOMAIN");
                *checked.entry("NXDOMAIN").or_default() += 1;
            }
            Some(records) => {
                assert_eq!(rcode(&reply), 0, "{name} {qtype}");
                let want: BTreeSet<String> = records
                    .iter()
                    .filter(|(t, _)| t == qtype)
                    .map(|(_, data)| data.clone())
                    .collect();
                let got: BTreeSet<String> = reply
                    .answers
                    .iter()
                    .filter(|r| r.record_type() == record_type)
                    .map(|r| rdata_text(&r.data))
                    .collect();
                assert_eq!(got, want, "{name} {qtype}");
                *checked
                    .entry(if want.is_empty() { "NODATA" } else { "hit" })
                    .or_default() += 1;
            }
        }
    }
    // The mix covers every outcome.
    for outcome in ["hit", "NODATA", "NXDOMAIN", "PTR"] {
        assert!(
            checked.get(outcome).copied().unwrap_or(0) > 0,
            "{checked:?}"
        );
    }

    // And the load generator runs that mix with no loss and no mismatch.
    // A reply is waited for 5 s, not the default 1 s: a machine busy with
    // other work can hold a core or the load generator off the CPU for
    // longer than that, and this test is about answers, not speed.
    let load = LoadConfig {
        server: server.addr,
        queries: parse_query_file(&queries_text).unwrap(),
        rate: 3_000,
        duration: Duration::from_millis(800),
        sockets: 8,
        threads: 2,
        timeout: Duration::from_secs(5),
        ..LoadConfig::default()
    };
    let drops_before = udp_receive_buffer_errors();
    let report = run(&load, None).unwrap();
    if (report.lost, report.mismatched) != (0, 0) {
        // Enough to tell a silent core from a full socket buffer next time.
        let metrics = server.http_addr("metrics");
        let (_, exposition) = http_get(metrics, "/metrics");
        let counters: Vec<&str> = exposition
            .lines()
            .filter(|l| {
                !l.starts_with('#') && (l.contains("requests_total") || l.contains("dropped"))
            })
            .collect();
        panic!(
            "lost or mismatched replies: {report:?}\ndatagrams this host dropped for a full receive buffer meanwhile: {}\nserver counters:\n{}\nserver log:\n{}",
            udp_receive_buffer_errors().saturating_sub(drops_before),
            counters.join("\n"),
            server.log_so_far()
        );
    }
    assert_eq!(report.answered, report.sent);
    assert!(report.rcodes["NXDOMAIN"] > 0 && report.rcodes["NOERROR"] > report.rcodes["NXDOMAIN"]);
    let _ = std::fs::remove_dir_all(dir);
}
