#!/usr/bin/env python3
"""DNS over TLS and DNS over HTTPS, side by side: kubewire's DoT and DoH
listeners next to dnsdist's and CoreDNS's, on one CPU each.

The servers serve the same scenario cluster (`kubewire-bench scenario`,
--scenario DIR: manifests.json, cluster.local.zone and queries.txt):
- `kubewire`: `--manifests`, `--tls-listen`, `--https-listen`, one core on
  CPU 0, `--ttl 3600`.
- `dnsdist`: Debian's dnsdist, `addTLSLocal` and (if its build has DoH)
  `addDOHLocal`, a packet cache in front of one backend, pinned to CPU 0.
  The backend (`--dnsdist-backend`) runs on CPU 1 with the load: by default
  a UDP and TCP kubewire serving the same cluster with `--ttl 3600`, so that
  every answer is cacheable and dnsdist answers the measured queries from
  its cache as kubewire answers from its table; with `null`, the null
  responder (`kubewire-null-responder`), whose echoed answers hold no
  record and so no TTL, which dnsdist's packet cache does not keep, and
  which answers no TCP (dnsdist forwards DoT queries over TCP). The report
  gives dnsdist's cache hits and misses in the measured windows.
- `coredns`: CoreDNS (bench/peers/build.sh) with `tls://.:PORT` and
  `https://.:PORT` server blocks, each `tls CERT KEY` and `file ZONE
  cluster.local` (the zone file's TTLs raised to 3600 like the others'),
  GOMAXPROCS=1, pinned to CPU 0.
A fresh self-signed certificate (ECDSA P-256 by default) per run.

The queries are the scenario's, less the reverse (in-addr.arpa) ones,
which the zone file does not hold, with EDNS0 (dnsperf -e; an OPT record in
the DoH URIs), so no answer is truncated between dnsdist and its UDP backend.

Parts (`--parts`), each in interleaved rounds (kubewire, dnsdist, CoreDNS,
kubewire, ...), medians over rounds, and same-round ratios kubewire ÷ each:
1. `queries`: one kept connection at a fixed offered rate, on CPU 1. DoT:
   dnsperf (`-m dot`, one client, `-Q RATE`, `-l SECONDS`), p50 and p99
   from its per-answer latencies (`-v`). DoH: h2load (one client, HTTP/2,
   `--rps RATE`, `-D SECONDS`) over GET URIs of the same queries, p50 and
   p99 from its `--log-file`; not `dnsperf -m doh`, whose 2.10 client
   loses answers that dnsdist and CoreDNS send when more than one query is
   in flight (`--doh-client dnsperf` uses it anyway). Each server's CPU
   time (user + system of its process group, from /proc) over the run ÷
   the answered queries; answered QPS; latency. Every server is first
   asked each distinct name once over each protocol (so dnsdist's cache
   is warm).
2. `handshakes`: `openssl s_time -new` (full handshakes, TLS 1.3, no
   session resumption; `--handshake-clients` of them at once) on CPU 1
   against each TLS port for `--handshake-seconds`: new handshakes per
   second and the server's CPU per handshake over the same window.

Usage:
  python3 bench/compare_encrypted.py [--rate 10000] [--seconds 5] [--rounds 3] [--handshake-seconds 5]
      [--parts queries,handshakes] [--protocols dot,doh] [--servers kubewire,dnsdist,coredns]
      [--dnsdist-backend kubewire|null] [--doh-client h2load|dnsperf] [--key-type ec|rsa]
      [--scenario /tmp/scen1] [--no-build] [--out bench/results/encrypted.md]
Needs root on first run: installs dnsperf, dnsdist, h2load (nghttp2-client) and openssl from Debian.
"""

import argparse
import base64
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchlib import (RELEASE, Server, ask_doh, ask_dot, build_release, cpu_model, dnsperf, ensure_debian,
                      free_port, git_commit, h2load, peers_bin, percentile, query_bytes, run, self_signed_cert)

SERVER_CPU = "0"
LOAD_CPU = "1"
TTL = 3600
API_KEY = "kubewire-bench"
QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "TXT": 16, "AAAA": 28, "SRV": 33}
PROTOCOL_NAMES = {"tcp": "TCP", "dot": "DoT", "doh": "DoH"}
# The kubewire binary measured (--kubewire).
KUBEWIRE = [RELEASE / "kubewire"]
EDNS_SIZE = 4096
SCENARIO = ["--services", "1000", "--headless-every", "5", "--endpoints-per-headless", "10", "--pods", "1000",
            "--namespaces", "10", "--queries", "100000", "--seed", "1"]


def scenario_files(args, work):
    """The scenario's manifests, a copy of its zone file with TTLs of an hour, the query file
    without reverse names, and the distinct lines of that."""
    scen = Path(args.scenario)
    if not (scen / "queries.txt").exists():
        scen.mkdir(parents=True, exist_ok=True)
        run([str(RELEASE / "kubewire-bench"), "scenario", *SCENARIO, "--out-dir", str(scen)])
    zone = []
    for line in (scen / "cluster.local.zone").read_text().splitlines():
        if line.startswith("$TTL"):
            line = f"$TTL {TTL}"
        elif " IN SOA " in line:
            fields = line.split()
            line = " ".join(fields[:-1] + [str(TTL)])  # the SOA minimum: negative answers' TTL
        zone.append(line)
    (work / "cluster.local.zone").write_text("\n".join(zone) + "\n")
    lines = [line for line in (scen / "queries.txt").read_text().splitlines()
             if line.strip() and not line.split()[0].rstrip(".").endswith(".arpa")]
    (work / "queries.txt").write_text("\n".join(lines) + "\n")
    distinct = list(dict.fromkeys(lines))
    (work / "distinct.txt").write_text("\n".join(distinct) + "\n")
    return scen / "manifests.json", work / "cluster.local.zone", work / "queries.txt", work / "distinct.txt", \
        len(lines), distinct


def doh_uris(path, lines, port, edns):
    """h2load's input: one GET URI (RFC 8484, ID 0) per query line, for 127.0.0.1:port."""
    uris = []
    for line in lines:
        name, qtype = line.split()[:2]
        query = query_bytes(name, QTYPES[qtype.upper()], qid=0, edns=edns)
        uris.append(f"https://127.0.0.1:{port}/dns-query?dns=" + base64.urlsafe_b64encode(query).rstrip(b"=").decode())
    Path(path).write_text("\n".join(uris) + "\n")
    return path


def answers_both(server):
    """Ready: a DoT and (if served) a DoH query for the API service answer NOERROR."""
    name = "kubernetes.default.svc.cluster.local"
    dot = ask_dot(server.ports["dot"], name)
    if not dot or dot[0] != 0:
        return False
    if "doh" in server.ports:
        doh = ask_doh(server.ports["doh"], name)
        return bool(doh) and doh[0] == 0
    return True


def kubewire_server(work, manifests, crt, key, name="kubewire", binary=None):
    udp, dot, doh = free_port(), free_port(), free_port()
    argv = [str(binary or KUBEWIRE[0]), "--manifests", str(manifests), "--cores", f"{SERVER_CPU}-{SERVER_CPU}",
            "--listen", f"127.0.0.1:{udp}", "--tls-listen", f"127.0.0.1:{dot}", "--https-listen",
            f"127.0.0.1:{doh}", "--tls-cert-file", crt, "--tls-key-file", key, "--ttl", str(TTL),
            "--health-addr", "", "--ready-addr", "", "--metrics-addr", "127.0.0.1:0", "--log-level", "warn"]
    server = Server(name, udp, argv, work, cpus=SERVER_CPU, ready=answers_both)
    # Plain TCP on the UDP port: the reference DoT is held to (kubewire only).
    server.ports = {"tcp": udp, "dot": dot, "doh": doh}
    return server


def backend_server(work, kind, manifests):
    port = free_port()
    if kind == "null":
        argv = [str(RELEASE / "kubewire-null-responder"), f"127.0.0.1:{port}", LOAD_CPU]
    else:
        argv = [str(RELEASE / "kubewire"), "--manifests", str(manifests), "--cores", f"{LOAD_CPU}-{LOAD_CPU}",
                "--listen", f"127.0.0.1:{port}", "--ttl", str(TTL), "--health-addr", "", "--ready-addr", "",
                "--metrics-addr", "127.0.0.1:0", "--log-level", "warn"]
    return Server("backend", port, argv, work, cpus=LOAD_CPU)


def dnsdist_server(work, crt, key, backend_port, doh):
    udp, dot, web = free_port(), free_port(), free_port()
    ports = {"dot": dot}
    conf = [f'setLocal("127.0.0.1:{udp}")',
            f'addTLSLocal("127.0.0.1:{dot}", "{crt}", "{key}")']
    if doh:
        ports["doh"] = free_port()
        conf.append(f'addDOHLocal("127.0.0.1:{ports["doh"]}", "{crt}", "{key}", "/dns-query")')
    conf += [f'newServer({{address="127.0.0.1:{backend_port}"}})',
             f"pc = newPacketCache(200000, {{maxTTL=86400, minTTL=0, maxNegativeTTL={TTL}}})",
             'getPool(""):setCache(pc)',
             'setSecurityPollSuffix("")',
             f'webserver("127.0.0.1:{web}")',
             f'setWebserverConfig({{apiKey="{API_KEY}", acl="127.0.0.0/8"}})']
    path = Path(work) / "dnsdist.conf"
    path.write_text("\n".join(conf) + "\n")
    server = Server("dnsdist", udp, ["dnsdist", "--supervised", "--disable-syslog", "-C", str(path)], work,
                    cpus=SERVER_CPU, ready=answers_both)
    server.ports = ports
    server.web = web
    return server


def coredns_server(work, zone, crt, key):
    dot, doh = free_port(), free_port()
    block = f"""{{
    tls {crt} {key}
    file {zone} cluster.local
}}
"""
    corefile = Path(work) / "Corefile"
    corefile.write_text(f"tls://.:{dot} {block}https://.:{doh} {block}")
    server = Server("coredns", dot, [peers_bin("coredns"), "-conf", str(corefile)], work, cpus=SERVER_CPU,
                    env={"GOMAXPROCS": "1"}, ready=answers_both)
    server.ports = {"dot": dot, "doh": doh}
    return server


def dnsdist_stats(server):
    """dnsdist's counters (its web server's /jsonstat), or {} if it does not answer."""
    request = urllib.request.Request(f"http://127.0.0.1:{server.web}/jsonstat?command=stats",
                                     headers={"X-API-Key": API_KEY})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return {}


def doh_options(args, port):
    return ["-O", f"doh-uri=https://localhost:{port}/dns-query", "-O", f"doh-method={args.doh_method}"]


def perf_extra(args, proto, port):
    # sockready: dnsperf's warnings while its TLS connection is being set up.
    extra = ["-T", "1", "-O", "suppress=sockready"] + ([] if args.no_edns else ["-e"])
    return extra + (doh_options(args, port) if proto == "doh" else [])


def check_answers(servers, distinct, notes):
    """Every server answers a sample of the distinct names alike, over DoT and over DoH (HTTP/1.1
    GET): (rcode, answer count)."""
    step = max(len(distinct) // 40, 1)
    disagree = []
    for line in distinct[::step]:
        name, qtype = line.split()[:2]
        answers = {}
        for s in servers:
            answers[f"{s.name} DoT"] = ask_dot(s.ports["dot"], name, QTYPES[qtype.upper()])
            if "doh" in s.ports:
                answers[f"{s.name} DoH"] = ask_doh(s.ports["doh"], name, QTYPES[qtype.upper()])
        if answers.get("kubewire DoT") is None:
            raise RuntimeError(f"kubewire did not answer {name} {qtype} over DoT")
        if len(set(answers.values())) != 1:
            disagree.append(f"`{name} {qtype}`: " + ", ".join(f"{k} {v}" for k, v in answers.items()))
    if disagree:
        notes.append(f"The servers disagree on {len(disagree)} of {len(distinct[::step])} sampled names "
                     "((rcode, answers)): " + "; ".join(disagree[:10]))
    else:
        notes.append(f"Every server gave the same (rcode, answer count) over DoT and over DoH for "
                     f"{len(distinct[::step])} sampled names of the query list.")


def warm(args, servers, protocols, distinct_path, n_distinct, notes):
    """Each distinct name once, over each protocol, to each server: dnsdist's cache fills."""
    for s in servers:
        for proto in protocols:
            if proto not in s.ports:
                continue
            port = s.ports[proto]
            if proto == "doh" and args.doh_client == "h2load":
                r = h2load(s.uris_distinct, 0, 0, cpu=LOAD_CPU, streams=100, requests=n_distinct)
                r["rcodes"] = f"HTTP {r['status']}"
            else:
                r = dnsperf(port, distinct_path, 60, 0, cpu=LOAD_CPU, mode=proto, clients=1, outstanding=100,
                            extra=["-n", "1", "-t", "2", *perf_extra(args, proto, port)])
            print(f"warm {s.name} {proto}: {r['completed']} of {n_distinct} answered, {r['rcodes']}", flush=True)
            if r["completed"] != n_distinct:
                notes.append(f"Warm-up of {s.name} over {PROTOCOL_NAMES[proto]}: {r['completed']} of {n_distinct} "
                             f"distinct names answered (lost {r['lost']}); dnsperf: {r['stderr'][:300]!r}")


def alive(server, notes):
    if server.proc.poll() is not None:
        notes.append(f"{server.name} exited with {server.proc.returncode}; its log:\n\n```\n{server.log_tail(30)}\n```")
        return False
    return True


def measure_queries(args, s, proto, queries, work, rnd):
    port = s.ports[proto]
    stats0 = dnsdist_stats(s) if s.name == "dnsdist" else {}
    cpu0 = s.cpu_seconds()
    if proto == "doh" and args.doh_client == "h2load":
        r = h2load(s.uris, args.seconds, args.rate, cpu=LOAD_CPU, streams=args.outstanding,
                   log_file=work / f"h2load-{s.name}-{rnd + 1}.log")
        r["rcodes"] = f"HTTP {r['status']}"
        r["reconnections"] = None
        # h2load prints no average: the mean of its per-request times.
        lat = r["latencies_ms"]
        r["avg_ms"] = sum(lat) / len(lat) if lat else None
        r["max_ms"] = lat[-1] if lat else None
    else:
        r = dnsperf(port, queries, args.seconds, args.rate, cpu=LOAD_CPU, mode=proto, clients=1,
                    outstanding=args.outstanding, extra=perf_extra(args, proto, port), verbose=True)
    r["cpu_s"] = s.cpu_seconds() - cpu0
    completed = r["completed"] or 0
    r["cpu_us"] = r["cpu_s"] * 1e6 / completed if completed else None
    lat = r.pop("latencies_ms")
    r["p50_ms"], r["p99_ms"] = percentile(lat, 0.5), percentile(lat, 0.99)
    r["latency_samples"] = len(lat)
    if s.name == "dnsdist":
        stats1 = dnsdist_stats(s)
        r["cache"] = {k: stats1.get(k, 0) - stats0.get(k, 0) for k in ("cache-hits", "cache-misses")}
    return r


def s_time(args, s, proto):
    port = s.ports[proto]
    cmd = ["taskset", "-c", LOAD_CPU, "openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time",
           str(args.handshake_seconds)]
    cpu0 = s.cpu_seconds()
    t0 = time.monotonic()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(args.handshake_clients)]
    outs = [p.communicate() for p in procs]
    wall = time.monotonic() - t0
    time.sleep(0.2)  # the server's side of the last closes
    cpu = s.cpu_seconds() - cpu0
    count, errors = 0, []
    for p, (out, err) in zip(procs, outs):
        m = re.search(r"(\d+) connections in [\d.]+s;", out)
        count += int(m.group(1)) if m else 0
        if p.returncode or not m or err.strip():
            errors.append(f"rc {p.returncode}: {(err.strip() or out.strip())[-300:]}")
    return {"handshakes": count, "wall_s": wall, "per_s": count / wall, "cpu_s": cpu,
            "cpu_us": cpu * 1e6 / count if count else None, "cpu_share": cpu / wall, "errors": errors,
            "command": cmd}


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=2):
    return "–" if value is None else f"{value:,.{digits}f}"


def ratios(results, key, proto, names):
    """Median over rounds of kubewire's value ÷ each other server's, same round."""
    out = {}
    mine = results.get(("kubewire", proto), [])
    for name in names:
        theirs = results.get((name, proto), [])
        values = [a[key] / b[key] for a, b in zip(mine, theirs)
                  if a.get(key) is not None and b.get(key) not in (None, 0)]
        out[name] = med(values)
    return out


def versions(has_doh):
    def first_line(cmd):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "unknown"
    perf = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True)
    perf_version = re.search(r"Version ([\d.]+)", perf.stdout + perf.stderr)
    return {
        "dnsdist": first_line(["dnsdist", "--version"]) + ("" if has_doh else " (built without DoH)"),
        "coredns": first_line([peers_bin("coredns"), "-version"]),
        "dnsperf": perf_version.group(1) if perf_version else "unknown",
        "openssl": first_line(["openssl", "version"]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=10000, help="offered queries per second over the one connection")
    ap.add_argument("--seconds", type=int, default=5, help="seconds per dnsperf run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--handshake-seconds", type=int, default=5)
    ap.add_argument("--handshake-clients", type=int, default=1, help="openssl s_time processes at once")
    ap.add_argument("--outstanding", type=int, default=100, help="dnsperf -q (for DoH: concurrent streams)")
    ap.add_argument("--parts", default="queries,handshakes")
    ap.add_argument("--protocols", default="tcp,dot,doh",
                    help="tcp (kubewire's own plain TCP, the reference for DoT), dot, doh")
    ap.add_argument("--kubewire", default=str(RELEASE / "kubewire"), help="the kubewire binary measured")
    ap.add_argument("--baseline", help="another kubewire binary, measured in the same rounds as "
                    "kubewire-before (before and after a change)")
    ap.add_argument("--aa", action="store_true", help="also a copy of the measured binary, as kubewire-aa: "
                    "the run's own noise")
    ap.add_argument("--servers", default="kubewire,dnsdist,coredns")
    ap.add_argument("--dnsdist-backend", choices=("kubewire", "null"), default="kubewire")
    ap.add_argument("--doh-client", choices=("h2load", "dnsperf"), default="h2load",
                    help="the DoH load: h2load with GET URIs, or dnsperf -m doh (see the notes)")
    ap.add_argument("--doh-method", choices=("GET", "POST"), default="GET", help="with --doh-client dnsperf")
    ap.add_argument("--key-type", choices=("ec", "rsa"), default="ec")
    ap.add_argument("--no-edns", action="store_true", help="queries without EDNS0")
    ap.add_argument("--scenario", default="/tmp/scen1")
    ap.add_argument("--no-build", action="store_true", help="use the binaries in target/release as they are")
    ap.add_argument("--out", help="also write the report here")
    args = ap.parse_args()
    KUBEWIRE[0] = Path(args.kubewire).resolve()
    command = shlex.join(["python3", "bench/compare_encrypted.py", *sys.argv[1:]])
    parts = args.parts.split(",")
    protocols = [p for p in args.protocols.split(",") if p in PROTOCOL_NAMES]
    wanted = args.servers.split(",")

    ensure_debian([("dnsperf", "dnsperf"), ("dnsdist", "dnsdist"), ("h2load", "nghttp2-client"),
                   ("openssl", "openssl")])
    if not args.no_build:
        build_release()
    kubewire_help = subprocess.run([str(RELEASE / "kubewire"), "--help"], capture_output=True, text=True).stdout
    if "--tls-listen" not in kubewire_help or "--https-listen" not in kubewire_help:
        sys.exit(f"{RELEASE / 'kubewire'} has no --tls-listen or --https-listen: build it from this tree")
    features = subprocess.run(["dnsdist", "--version"], capture_output=True, text=True).stdout
    dnsdist_doh = "dns-over-https" in features
    work = Path(tempfile.mkdtemp(prefix="kubewire-encrypted-"))
    manifests, zone, queries, distinct_path, n_queries, distinct = scenario_files(args, work)
    query_lines = queries.read_text().splitlines()
    crt, key = self_signed_cert(work, args.key_type)
    notes = []
    if not dnsdist_doh:
        notes.append("This dnsdist's build has no DoH (`dnsdist --version` lists no dns-over-https): dnsdist is "
                     "measured over DoT only.")

    backend = backend_server(work, args.dnsdist_backend, manifests) if "dnsdist" in wanted else None
    makers = {"kubewire": lambda: kubewire_server(work, manifests, crt, key),
              "dnsdist": lambda: dnsdist_server(work, crt, key, backend.port, dnsdist_doh),
              "coredns": lambda: coredns_server(work, zone, crt, key)}
    if args.aa:
        # A copy, not the same file: two binaries, as a before and after are.
        copy = work / "kubewire-aa"
        shutil.copy2(KUBEWIRE[0], copy)
        makers["kubewire-aa"] = lambda: kubewire_server(work, manifests, crt, key, "kubewire-aa", copy)
        wanted.append("kubewire-aa")
    if args.baseline:
        makers["kubewire-before"] = lambda: kubewire_server(work, manifests, crt, key, "kubewire-before",
                                                            Path(args.baseline).resolve())
        wanted.append("kubewire-before")
    servers = [makers[name]() for name in ("kubewire", "kubewire-aa", "kubewire-before", "dnsdist", "coredns")
               if name in wanted]
    for s in servers:
        if "doh" in s.ports:
            edns = 0 if args.no_edns else EDNS_SIZE
            s.uris = doh_uris(work / f"uris-{s.name}.txt", query_lines, s.ports["doh"], edns)
            s.uris_distinct = doh_uris(work / f"uris-distinct-{s.name}.txt", distinct, s.ports["doh"], edns)
    others = [s.name for s in servers if s.name != "kubewire"]
    results = {}  # (server, proto) -> [per-round dict]
    handshakes = {}
    started = time.monotonic()
    try:
        if backend:
            backend.start()
        for s in servers:
            s.start(timeout=60)
            print(f"{s.name} ready: {s.ports}", flush=True)
        check_answers(servers, distinct, notes)
        if "queries" in parts:
            warm(args, servers, protocols, distinct_path, len(distinct), notes)
        for rnd in range(args.rounds):
            if "queries" in parts:
                for proto in protocols:
                    for s in servers:
                        if proto not in s.ports or not alive(s, notes):
                            continue
                        r = measure_queries(args, s, proto, queries, work, rnd)
                        results.setdefault((s.name, proto), []).append(r)
                        cache = f", cache {r['cache']}" if "cache" in r else ""
                        print(f"round {rnd + 1} {proto} {s.name}: {fmt(r['qps'], 0)} qps, "
                              f"{fmt(r['cpu_us'])} µs CPU/query, p99 {fmt(r['p99_ms'], 3)} ms, lost {r['lost']}, "
                              f"reconnections {r['reconnections']}{cache}"
                              + (f", {r['bursts']} bursts" if "bursts" in r else ""), flush=True)
                        if r["stderr"]:
                            print(f"  dnsperf stderr: {r['stderr'][:500]}", flush=True)
            if "handshakes" in parts:
                for proto in protocols:
                    for s in servers:
                        if proto == "tcp" or proto not in s.ports or not alive(s, notes):
                            continue
                        h = s_time(args, s, proto)
                        handshakes.setdefault((s.name, proto), []).append(h)
                        print(f"round {rnd + 1} handshakes {proto} {s.name}: {h['per_s']:.0f}/s, "
                              f"{fmt(h['cpu_us'], 0)} µs CPU/handshake"
                              + (f", errors {h['errors']}" if h["errors"] else ""), flush=True)
        for s in servers:
            alive(s, notes)
    finally:
        for s in [*servers, *([backend] if backend else [])]:
            s.stop()
    elapsed = time.monotonic() - started

    report = write_report(args, command, servers, others, protocols, parts, results, handshakes, notes, work,
                          n_queries, len(distinct), dnsdist_doh, elapsed)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
        print(f"wrote {args.out}", file=sys.stderr)


def write_report(args, command, servers, others, protocols, parts, results, handshakes, notes, work, n_queries,
                 n_distinct, dnsdist_doh, elapsed):
    v = versions(dnsdist_doh)
    binary = RELEASE / "kubewire"
    built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(binary.stat().st_mtime))
    backend = ("a kubewire serving the same cluster over UDP and TCP with `--ttl 3600` (so every answer is "
               "cacheable for an hour)" if args.dnsdist_backend == "kubewire" else
               "the null responder (`kubewire-null-responder ADDR 1`: it echoes each query with QR set, no "
               "records, over UDP only)")
    lines = ["# DNS over TLS and HTTPS: kubewire, dnsdist and CoreDNS", "",
             "Command:", "", "```sh", command, "```", "",
             f"Git commit: {git_commit()} (target/release/kubewire built {built}). "
             f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}. "
             f"{v['dnsdist']}; {v['coredns']}; dnsperf {v['dnsperf']}; {v['openssl']}.", "",
             "## Set-up", "",
             f"- Every server on CPU {SERVER_CPU} (`taskset -c {SERVER_CPU}`; kubewire with `--cores 0-0`, CoreDNS "
             f"with GOMAXPROCS=1, dnsdist as is); the load (dnsperf, h2load, openssl) on CPU {LOAD_CPU}.",
             f"- kubewire: `--manifests` of the scenario ({args.scenario}), `--tls-listen`, `--https-listen`, "
             "`--ttl 3600`, `--log-level warn`.",
             f"- dnsdist: `addTLSLocal` and {'`addDOHLocal` (path /dns-query)' if dnsdist_doh else 'no DoH'}, "
             "a packet cache (200000 entries) in front of one backend: "
             f"{backend}, on CPU {LOAD_CPU} with the load. So dnsdist answers the repeated names from its "
             "cache, as kubewire answers them from its table; every server was first asked each distinct name "
             "once over each protocol, and dnsdist's cache hits and misses in the measured windows are below."
             + (" Not the null responder: its echoed answers hold no record, so no TTL, and dnsdist 1.7's packet "
                "cache keeps no answer without a TTL (two identical UDP queries through it were two cache misses); "
                "and it serves no TCP, over which dnsdist forwards what comes in over DoT (a DoT query through it "
                "got the connection closed). `--dnsdist-backend null` runs it that way."
                if args.dnsdist_backend == "kubewire" else ""),
             "- CoreDNS: `tls://.:PORT` and `https://.:PORT` server blocks, each `tls CERT KEY` and "
             "`file cluster.local.zone cluster.local` (the scenario's zone file, its TTLs set to 3600).",
             f"- A self-signed certificate made for this run ({'ECDSA P-256' if args.key_type == 'ec' else 'RSA 2048'}"
             "). Neither dnsperf, h2load nor openssl s_time verifies it.",
             f"- Queries: the scenario's query file less its reverse (in-addr.arpa) names, which the zone file "
             f"does not hold: {n_queries:,} lines, {n_distinct:,} distinct; "
             f"{'without EDNS0' if args.no_edns else 'with EDNS0 (dnsperf -e; an OPT record in the DoH URIs)'}; "
             "the same sequence to every server.",
             ""]
    if args.doh_client == "h2load":
        lines[-1:-1] = [
            "- DoH load: h2load (nghttp2), not `dnsperf -m doh`. With more than one query in flight on its one "
            "connection, dnsperf 2.10 counted as lost answers that dnsdist and CoreDNS had sent (its own HTTP/2 "
            "status counter had the 200s): at `-q 10`, 2 of 200 answered for dnsdist and 1,985 of 2,000 for CoreDNS "
            "(kubewire: all); at `-q 100` (and with POST too) worse. With one in flight it reached 2,400 qps on "
            "kubewire and 126 on CoreDNS at `-Q 10000`, with 40-ms stalls (it sets no TCP_NODELAY). "
            "`--doh-client dnsperf` runs it anyway."]
    if "queries" in parts:
        if args.doh_client == "h2load":
            doh_load = (f"DoH: `h2load -c 1 -t 1 -m {args.outstanding} --rps {args.rate} -D {args.seconds}` over "
                        "GET URIs (`/dns-query?dns=`, ID 0, one per query line, in order), HTTP/2 by ALPN; latencies "
                        "from its `--log-file` (time to the end of each response). h2load's rate timer releases "
                        "requests in bursts (the `bursts` below: starts 200 µs or more apart), so its latencies "
                        "include waiting behind the rest of a burst: compare them between servers, not with DoT's. "
                        "Lost, for DoH: requests h2load started that got no 2xx answer before it stopped.")
        else:
            doh_load = (f"DoH: the same dnsperf with `-m doh`, {args.doh_method} on /dns-query, HTTP/2.")
        lines += [f"## Queries over one kept connection: {args.rate:,} qps offered for {args.seconds} s", "",
                  f"DoT: `dnsperf -m dot -c 1 -T 1 -q {args.outstanding} -Q {args.rate} -l {args.seconds}` (one "
                  "connection); p50 and p99 from its per-answer latencies (`-v`: dnsperf itself reports only the "
                  f"average, min, max and standard deviation). {doh_load} {args.rounds} interleaved rounds, medians. "
                  "CPU per query: the server's user + system CPU time (its whole process group, from /proc) over "
                  "the run ÷ the queries it answered; CPU % of a core: that CPU time ÷ the run's seconds.", "",
                  "| protocol | server | answered qps | CPU µs/query | CPU % of a core | avg ms | p50 ms | p99 ms "
                  "| max ms | lost | reconnections | response codes (last round) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for proto in protocols:
            for s in servers:
                rows = results.get((s.name, proto))
                if not rows:
                    continue
                share = med([r["cpu_s"] / args.seconds * 100 for r in rows])
                lines.append(f"| {PROTOCOL_NAMES[proto]} | {s.name} | {fmt(med([r['qps'] for r in rows]), 0)} | "
                             f"{fmt(med([r['cpu_us'] for r in rows]))} | {fmt(share, 1)} | "
                             f"{fmt(med([r['avg_ms'] for r in rows]), 3)} | {fmt(med([r['p50_ms'] for r in rows]), 3)} | "
                             f"{fmt(med([r['p99_ms'] for r in rows]), 3)} | {fmt(med([r['max_ms'] for r in rows]), 3)} | "
                             f"{sum(r['lost'] or 0 for r in rows)} | "
                             + ("–" if rows[0]["reconnections"] is None else str(sum(r["reconnections"] or 0 for r in rows)))
                             + " | "
                             f"{rows[-1]['rcodes']} |")
        bursts = [r["bursts"] for rows in results.values() for r in rows if r.get("bursts")]
        lines += ["", "Lost and reconnections are summed over the rounds."
                  + (f" h2load released its DoH requests in {min(bursts):,} to {max(bursts):,} bursts per run."
                     if bursts else ""), "",
                  "Same-round ratios, kubewire ÷ each (median over rounds; below 1: kubewire uses less):", "",
                  "| protocol | ÷ server | CPU per query | p99 latency | answered qps |", "| --- | --- | --- | --- | --- |"]
        for proto in protocols:
            cpu, p99, qps = (ratios(results, k, proto, others) for k in ("cpu_us", "p99_ms", "qps"))
            for name in others:
                if results.get((name, proto)):
                    lines.append(f"| {PROTOCOL_NAMES[proto]} | {name} | {fmt(cpu[name], 3)} | {fmt(p99[name], 3)} | "
                                 f"{fmt(qps[name], 3)} |")
        own_tcp = results.get(("kubewire", "tcp"), [])
        for proto in ("dot", "doh"):
            mine = results.get(("kubewire", proto), [])
            values = [a["cpu_us"] / b["cpu_us"] for a, b in zip(mine, own_tcp)
                      if a.get("cpu_us") is not None and b.get("cpu_us")]
            if values:
                lines.append(f"| {PROTOCOL_NAMES[proto]} | kubewire's own TCP | {fmt(med(values), 3)} | – | – |")
        cache_rows = results.get(("dnsdist", "dot"), []) + results.get(("dnsdist", "doh"), [])
        if cache_rows:
            hits = sum(r["cache"].get("cache-hits", 0) for r in cache_rows)
            misses = sum(r["cache"].get("cache-misses", 0) for r in cache_rows)
            lines += ["", f"dnsdist's packet cache in the measured windows: {hits:,} hits, {misses:,} misses "
                      f"({hits / max(hits + misses, 1) * 100:.1f}% hits)."]
        lines += ["", "Per round (CPU µs/query, p99 ms, answered qps):", "",
                  "| protocol | server | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in range(args.rounds)) + " |"]
        for proto in protocols:
            for s in servers:
                rows = results.get((s.name, proto))
                if rows:
                    lines.append(f"| {PROTOCOL_NAMES[proto]} | {s.name} | " + " | ".join(
                        f"{fmt(r['cpu_us'])} / {fmt(r['p99_ms'], 3)} / {fmt(r['qps'], 0)}" for r in rows) + " |")
        lines.append("")
    if "handshakes" in parts:
        lines += ["## New TLS handshakes", "",
                  f"`openssl s_time -connect 127.0.0.1:PORT -new -time {args.handshake_seconds}` ×"
                  f"{args.handshake_clients} at once on CPU {LOAD_CPU}: a full handshake per connection "
                  "(TLS 1.3, the client's default groups, no resumption), then close. Handshakes per second: "
                  "the connections s_time completed ÷ its wall time; CPU per handshake: the server's CPU time "
                  f"over the same window ÷ those connections. {args.rounds} interleaved rounds, medians.", "",
                  "| port | server | handshakes/s | CPU µs/handshake | CPU % of a core | errors |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for proto in protocols:
            for s in servers:
                rows = handshakes.get((s.name, proto))
                if rows:
                    errors = sum(len(h["errors"]) for h in rows)
                    lines.append(f"| {PROTOCOL_NAMES[proto]} | {s.name} | {fmt(med([h['per_s'] for h in rows]), 0)} | "
                                 f"{fmt(med([h['cpu_us'] for h in rows]), 1)} | "
                                 f"{fmt(med([h['cpu_share'] * 100 for h in rows]), 1)} | {errors} |")
        shares = [h["cpu_share"] for rows in handshakes.values() for h in rows]
        if shares and max(shares) < 0.9:
            lines += ["", f"No server was saturated (at most {max(shares) * 100:.0f}% of its CPU): the client side "
                      f"on CPU {LOAD_CPU} bounds the handshake rate, so CPU per handshake is the figure to compare."]
        lines += ["", "Same-round ratios, kubewire ÷ each (median over rounds):", "",
                  "| port | ÷ server | CPU per handshake | handshakes/s |", "| --- | --- | --- | --- |"]
        for proto in protocols:
            cpu, rate = (ratios(handshakes, k, proto, others) for k in ("cpu_us", "per_s"))
            for name in others:
                if handshakes.get((name, proto)):
                    lines.append(f"| {PROTOCOL_NAMES[proto]} | {name} | {fmt(cpu[name], 3)} | {fmt(rate[name], 3)} |")
        lines.append("")
    # What the load saw go wrong, and what the servers logged.
    odd = []
    for (name, proto), rows in sorted(results.items()):
        for i, r in enumerate(rows):
            if r["lost"] or r["reconnections"] or r["stderr"] or not r["completed"]:
                tool = "dnsperf" if r["reconnections"] is not None else "h2load"
                odd.append(f"- round {i + 1} {PROTOCOL_NAMES[proto]} {name} ({tool}): sent {r['sent']}, answered "
                           f"{r['completed']}, " + (f"lost {r['lost']}, reconnections {r['reconnections']}"
                                                    if tool == "dnsperf" else
                                                    f"no 2xx answer before h2load stopped {r['lost']}")
                           + (f"; {tool} said: `{r['stderr'][:300]}`" if r["stderr"] else ""))
    for (name, proto), rows in sorted(handshakes.items()):
        for i, h in enumerate(rows):
            if h["errors"]:
                odd.append(f"- round {i + 1} handshakes {PROTOCOL_NAMES[proto]} {name}: " + "; ".join(
                    f"`{e}`" for e in h["errors"][:3]))
    lines += ["## Notes", "", *(f"- {n}" for n in notes)]
    lines += odd or ["- No query was lost or left unanswered, no connection was re-opened, and dnsperf, h2load and "
                     "s_time reported no error."]
    if any(s.name == "kubewire" for s in servers):
        log = (work / "kubewire.log").read_text(errors="replace").splitlines()
        lines.append(f"- kubewire logged {len(log)} lines at `--log-level warn`"
                     + (":\n\n```\n" + "\n".join(log[:20]) + "\n```" if log else "."))
    lines += ["", f"Run time {elapsed:.0f} s; work directory {work}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
