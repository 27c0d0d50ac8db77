#!/usr/bin/env python3
"""Caching, side by side: kubewire's cache of forwarded answers next to
Unbound's and dnsdist's, in three parts.

The upstream of every part is a kubewire serving the scenario cluster
(`kubewire-bench scenario`) in `cluster.local`, pinned to CPU 1, with
`--ttl 3600`: every record, and the SOA minimum of every negative answer,
lives an hour, so nothing a cache holds expires during a run.

1. hits: warm cache hits at a fixed rate (`kubewire-bench compare`, in
   interleaved rounds, load on CPU 1, each server pinned to CPU 0):
   - `null`: the null responder (the floor);
   - `cluster`: kubewire answering the scenario cluster from its own table
     (the cluster-answer reference);
   - `kubewire`: kubewire forwarding to the upstream (its own zone is
     `kubewire.internal`, with no objects, so every name of the scenario is
     forwarded), its cache's TTLs raised to an hour;
   - `unbound`: Unbound forwarding "." to the upstream, cache on, every
     cache TTL an hour, prefetch off, one thread, iterator only (and the
     RFC 1918 reverse zones unblocked, so 10.in-addr.arpa is forwarded, not
     answered NXDOMAIN by Unbound itself);
   - `dnsdist`: dnsdist with one backend and a packet cache;
   - `coredns`: CoreDNS (bench/peers/build.sh) with NodeLocal DNSCache's
     Corefile: `cluster.local`, `in-addr.arpa` and `ip6.arpa` forwarded
     `force_tcp`, `.` forwarded over UDP, each behind `cache`, its caps raised
     to an hour and 200000 entries like the others', GOMAXPROCS=1.
   Every cache is warmed first with the scenario's distinct names, twice,
   then asked them a third time while the upstream logs each query it
   gets. A name that reaches the upstream on that third pass is one some
   server does not keep, and is dropped from the list every target gets
   (with the scenario's defaults: the SRV answers of the headless services,
   larger than 512 bytes and so truncated over UDP, which dnsdist's packet
   cache does not keep). The upstream's query log also shows whether any
   target went upstream during the measured rounds.
2. upstream: upstream queries per distinct name within its TTL. kubewire on
   two cores (`--cores 0-1`, cache TTLs raised to an hour and room for every
   name), asked each distinct name of the scenario four times (three times
   in a row, then once more in a second shuffled pass) by dnsperf from 32
   source ports, so copies of a name reach both cores at once. The figure is
   the upstream's own count (`coredns_dns_requests_total` over UDP, of the
   list's query types) ÷ the distinct names. Goal: 1.00.
3. rss: kubewire (default `[cache]`: 10000 entries, 16 MiB) on two cores,
   flooded with unique names the upstream answers NXDOMAIN with an SOA
   (`<random>.svc.cluster.local`, an unknown namespace) at a bounded rate;
   VmRSS of kubewire and its cache gauges as names go by. With
   `--node-local`, kubewire runs in node-local mode (`[node_local]`: its
   interface and NOTRACK rules, created in this host's network namespace
   and removed at the end) and is flooded on 169.254.20.10. With
   `--rss-target coredns`, CoreDNS takes kubewire's place with NodeLocal
   DNSCache's own Corefile and caches (`success 9984 30`, `denial 9984 5`
   for the cluster zones, `cache 30` for `.`), GOMAXPROCS=2.

Usage: python3 bench/compare_caches.py [--part hits|upstream|rss|all] [--rate 50000]
           [--seconds 5] [--rounds 3] [--names 1000000] [--flood-rate 20000] [--node-local]
           [--no-build] [--before OLD_KUBEWIRE_BINARY] [--no-peers]
Needs root on first run: installs unbound, dnsdist and dnsperf from Debian.
"""

import argparse
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import benchlib
from benchlib import ensure_sbin_tools, peers_bin, run, start, stop

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ["--services", "1000", "--headless-every", "5", "--endpoints-per-headless", "10",
            "--pods", "1000", "--namespaces", "10", "--queries", "100000", "--seed", "1"]
UPSTREAM = "127.0.0.1:5410"
UPSTREAM_METRICS = "127.0.0.1:9410"
HOUR = 3600
# Part 1's targets.
PORTS = {"null": 5310, "cluster": 5311, "kubewire": 5312, "unbound": 5313, "dnsdist": 5314, "coredns": 5316,
         "before": 5315}
KUBEWIRE_METRICS = "127.0.0.1:9412"
# Parts 2 and 3.
DEDUP_PORT, DEDUP_METRICS = 5320, "127.0.0.1:9420"
RSS_PORT, RSS_METRICS = 5330, "127.0.0.1:9430"
ASKS = 4
RSS_MARKS = (0.1, 0.25, 0.5, 0.75, 1.0)
TYPES = {"A": 1, "NS": 2, "SOA": 6, "PTR": 12, "AAAA": 28, "SRV": 33}
LONG_TTLS = f"""[cache]
min_ttl_s = {HOUR}
max_ttl_s = {HOUR}
denial_min_ttl_s = {HOUR}
denial_max_ttl_s = {HOUR}
"""


def ask(port, name, qtype, timeout=0.5):
    """One UDP query to 127.0.0.1:port; (rcode, truncated) or None."""
    qid = random.randrange(65536)
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        packet += bytes([len(label)]) + label.encode()
    packet += b"\0" + struct.pack("!HH", TYPES[qtype], 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, ("127.0.0.1", port))
        try:
            reply = sock.recv(65535)
        except socket.timeout:
            return None
    flags = struct.unpack("!H", reply[2:4])[0]
    return flags & 0xF, bool(flags & 0x200)


def wait_up(procs, ports, work, name="svc-0.ns-0.svc.cluster.local", qtype="A"):
    """Waits until every server in `ports` answers `name`, or exits."""
    benchlib.wait_up(procs, ports, work, lambda port: ask(port, name, qtype) is not None)


def metrics(addr):
    """The Prometheus text at addr as (name, labels, value) rows."""
    text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
    rows = []
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            rows.append((match.group(1), labels, float(match.group(3))))
    return rows


def total(rows, name, **want):
    return int(sum(value for metric, labels, value in rows if metric == name
                   and all(labels.get(k) == v for k, v in want.items())))


def dnsperf(port, queries, *extra, server="127.0.0.1"):
    """Runs dnsperf on CPU 1 once through `queries`; its summary as a dict."""
    out = subprocess.run(["taskset", "-c", "1", "dnsperf", "-s", server, "-p", str(port),
                          "-d", str(queries), "-n", "1", *extra],
                         capture_output=True, text=True, check=True).stdout
    stats = {}
    for key, field in (("sent", "Queries sent"), ("completed", "Queries completed"),
                       ("lost", "Queries lost")):
        match = re.search(rf"{field}:\s+(\d+)", out)
        stats[key] = int(match.group(1)) if match else 0
    match = re.search(r"Response codes:\s+(.*)", out)
    stats["rcodes"] = match.group(1).strip() if match else ""
    return stats


def start_upstream(work, release, log_queries=False):
    """The upstream: the scenario cluster on CPU 1, an hour's TTL."""
    argv = [str(release / "kubewire"), "--manifests", str(work / "scenario" / "manifests.json"),
            "--cores", "1-1", "--listen", UPSTREAM, "--ttl", str(HOUR), "--health-addr", "",
            "--ready-addr", "", "--metrics-addr", UPSTREAM_METRICS]
    if log_queries:
        # Every query it gets, logged: how a miss of any cache is seen.
        (work / "upstream.toml").write_text("[log]\nquery_log_sample = 1\n"
                                            "query_log_max_per_second = 10000000\n")
        argv += ["--config", str(work / "upstream.toml")]
    return start("upstream", "1", argv, work)


def forwarding_kubewire(release, work, port, metrics_addr, cores, config=None, binary=None):
    argv = [str(binary or release / "kubewire"), "--manifests", str(work / "empty.json"), "--zone",
            "kubewire.internal", "--cores", cores, "--listen", f"127.0.0.1:{port}", "--forward",
            UPSTREAM, "--health-addr", "", "--ready-addr", "", "--metrics-addr", metrics_addr]
    if config:
        argv += ["--config", str(config)]
    return argv


def distinct_lines(path):
    seen, lines = set(), []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) == 2 and (fields[0].lower(), fields[1]) not in seen:
            seen.add((fields[0].lower(), fields[1]))
            lines.append(line)
    return lines


def upstream_asked(log_path, offset, wanted):
    """(name, type, rcode) of the upstream's logged queries past `offset`
    that are in `wanted` (the dnsdist health checks are not)."""
    time.sleep(0.5)
    with open(log_path, "rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    asked = []
    for match in re.finditer(r"name=(\S+) qtype=(\S+) rcode=(\S+)", text):
        key = (match.group(1).rstrip(".").lower(), match.group(2))
        if key in wanted:
            asked.append((*key, match.group(3)))
    return asked


def part_hits(args, release, bench, work):
    print("\n# 1. Warm cache hits\n", flush=True)
    (work / "kubewire-hits.toml").write_text(LONG_TTLS + "max_entries = 200000\n"
                                             "max_bytes = 268435456\n")
    (work / "unbound.conf").write_text(f"""server:
  interface: 127.0.0.1@{PORTS["unbound"]}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{work}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  num-threads: 1
  so-reuseport: no
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  qname-minimisation: no
  prefetch: no
  unblock-lan-zones: yes
  insecure-lan-zones: yes
  cache-min-ttl: {HOUR}
  cache-max-ttl: {HOUR}
  cache-max-negative-ttl: {HOUR}
  msg-cache-size: 64m
  rrset-cache-size: 128m
  num-queries-per-thread: 4096
  outgoing-range: 8192
forward-zone:
  name: "."
  forward-addr: {UPSTREAM.replace(":", "@")}
""")
    (work / "dnsdist.conf").write_text(f"""setLocal("127.0.0.1:{PORTS["dnsdist"]}")
newServer({{address="{UPSTREAM}"}})
pc = newPacketCache(200000, {{maxTTL=86400, minTTL=0, maxNegativeTTL={HOUR}}})
getPool(""):setCache(pc)
setSecurityPollSuffix("")
""")
    cluster_block = f"""{{
    cache {{
        success 200000 {HOUR}
        denial 200000 {HOUR}
    }}
    forward . {UPSTREAM} {{
        force_tcp
    }}
}}
"""
    port = PORTS["coredns"]
    (work / "Corefile").write_text(
        f"cluster.local:{port} in-addr.arpa:{port} ip6.arpa:{port} {cluster_block}"
        f".:{port} {{\n    cache {HOUR} {{\n        success 200000\n        denial 200000\n    }}\n"
        f"    forward . {UPSTREAM}\n}}\n")
    procs = {}
    try:
        procs["upstream"] = start_upstream(work, release, log_queries=True)
        procs["null"] = start("null", "0", [str(release / "kubewire-null-responder"),
                              f"127.0.0.1:{PORTS['null']}", "0"], work)
        procs["cluster"] = start("cluster", "0", [str(release / "kubewire"), "--manifests",
                                 str(work / "scenario" / "manifests.json"), "--cores", "0-0",
                                 "--listen", f"127.0.0.1:{PORTS['cluster']}", "--ttl", str(HOUR),
                                 "--health-addr", "", "--ready-addr", "",
                                 "--metrics-addr", "127.0.0.1:0"], work)
        procs["kubewire"] = start("kubewire", "0", forwarding_kubewire(
            release, work, PORTS["kubewire"], KUBEWIRE_METRICS, "0-0",
            work / "kubewire-hits.toml"), work)
        cached = ["kubewire"]
        if args.before:
            # The same forwarding set-up from another build, for a before
            # and after of a change in one run.
            procs["before"] = start("before", "0", forwarding_kubewire(
                release, work, PORTS["before"], "127.0.0.1:0", "0-0",
                work / "kubewire-hits.toml", binary=args.before), work)
            cached.append("before")
        if not args.no_peers:
            procs["unbound"] = start("unbound", "0", ["unbound", "-d", "-c",
                                     str(work / "unbound.conf")], work)
            procs["dnsdist"] = start("dnsdist", "0", ["dnsdist", "--supervised",
                                     "--disable-syslog", "-C", str(work / "dnsdist.conf")], work)
            os.environ["GOMAXPROCS"] = "1"
            procs["coredns"] = start("coredns", "0", [peers_bin("coredns"), "-conf",
                                     str(work / "Corefile")], work)
            cached += ["unbound", "dnsdist", "coredns"]
        wait_up(procs, {"upstream": int(UPSTREAM.rsplit(":", 1)[1]),
                        **{name: port for name, port in PORTS.items() if name in procs}}, work)
        time.sleep(1)

        # Warm every cache twice, then see what still reaches the upstream.
        distinct = distinct_lines(work / "scenario" / "queries.txt")
        (work / "distinct.txt").write_text("\n".join(distinct) + "\n")
        wanted = {(line.split()[0].lower(), line.split()[1]) for line in distinct}
        upstream_log = work / "upstream.log"
        warm = ["-c", "16", "-q", "200", "-Q", str(args.flood_rate), "-t", "3"]
        uncached = {}
        for name in cached:
            for _ in range(2):
                dnsperf(PORTS[name], work / "distinct.txt", *warm)
            offset = upstream_log.stat().st_size
            check = dnsperf(PORTS[name], work / "distinct.txt", *warm)
            uncached[name] = upstream_asked(upstream_log, offset, wanted)
            print(f"{name}: warmed with {len(distinct)} distinct names twice; on a third pass "
                  f"{len(uncached[name])} reached the upstream (lost {check['lost']})", flush=True)
        dropped = {(n, t) for asked in uncached.values() for n, t, _ in asked}
        queries = work / "scenario" / "queries.txt"
        if dropped:
            every = queries.read_text().splitlines()
            lines = [line for line in every
                     if (line.split()[0].lower(), line.split()[1]) not in dropped]
            queries = work / "queries-cached.txt"
            queries.write_text("\n".join(lines) + "\n")
            print(f"\nDropped from the list, for every target: {len(dropped)} of {len(distinct)} "
                  f"distinct names ({len(every) - len(lines)} of {len(every)} lines), that some server "
                  f"does not keep:")
            for name, asked in uncached.items():
                if not asked:
                    continue
                truncated = sum(1 for n, t, _ in asked
                                if (ask(int(UPSTREAM.rsplit(":", 1)[1]), n, t) or (0, False))[1])
                kinds = Counter(f"{t} {rcode}" for _, t, rcode in asked)
                print(f"- {name}: {len(asked)} ({', '.join(f'{k}: {v}' for k, v in kinds.items())}"
                      f"; truncated over UDP: {truncated})")
        else:
            print("\nEvery server keeps every name: the scenario's list is used whole.")

        offset = upstream_log.stat().st_size
        cache_before = metrics(KUBEWIRE_METRICS)
        targets = [(name, PORTS[name]) for name in ("null", "cluster", *cached)]
        out_dir = Path(args.out_dir) if args.out_dir else work / "compare"
        cmd = [bench, "compare", "--queries", str(queries), "--rate", str(args.rate),
               "--seconds", str(args.seconds), "--rounds", str(args.rounds), "--cpus", "1",
               "--out-dir", str(out_dir)]
        for name, port in targets:
            cmd += ["--target", f"{name}=127.0.0.1:{port}@{procs[name].pid}"]
        print("\n$", " ".join(cmd), flush=True)
        run(cmd)
        went_up = upstream_asked(upstream_log, offset, wanted)
        cache_after = metrics(KUBEWIRE_METRICS)

        # p50 and p99 of each target's runs, from the JSON reports.
        print("\n| target | p50 µs (median of rounds) | p99 µs (median of rounds) | RCODEs (all rounds) |")
        print("| --- | --- | --- | --- |")
        for name, _ in targets:
            p50s, p99s, rcodes = [], [], Counter()
            for report in sorted(out_dir.glob(f"{name}-round*.json")):
                data = json.loads(report.read_text())
                latency = data.get("latency_us") or {}
                rcodes.update(data.get("rcodes") or {})
                if "p50" in latency:
                    p50s.append(latency["p50"])
                    p99s.append(latency["p99"])
            if p50s:
                p50s.sort()
                p99s.sort()
                codes = ", ".join(f"{k} {v}" for k, v in sorted(rcodes.items()))
                print(f"| {name} | {p50s[len(p50s) // 2]} | {p99s[len(p99s) // 2]} | {codes} |")
        hits = sum(total(cache_after, "coredns_cache_hits_total", type=t)
                   - total(cache_before, "coredns_cache_hits_total", type=t)
                   for t in ("success", "denial"))
        print(f"\nkubewire's cache during the rounds: {hits} hits; entries "
              f"{total(cache_after, 'coredns_cache_entries')}, "
              f"{total(cache_after, 'kubewire_cache_bytes')} bytes.")
        print(f"Queries of the list that reached the upstream during the rounds: {len(went_up)}"
              + (" (every cached target answered from its cache)." if not went_up else
                 f" ({', '.join(f'{n} {t}' for n, t, _ in went_up[:5])}, ...)."))
    finally:
        stop(procs)


def part_upstream(args, release, work):
    print("\n# 2. Upstream queries per distinct name (kubewire on 2 cores)\n", flush=True)
    distinct = distinct_lines(work / "scenario" / "queries.txt")
    rng = random.Random(1)
    order = distinct[:]
    rng.shuffle(order)
    lines = [line for line in order for _ in range(ASKS - 1)]
    again = distinct[:]
    rng.shuffle(again)
    lines += again
    (work / "dedup.txt").write_text("\n".join(lines) + "\n")
    types = sorted({line.split()[1] for line in distinct})
    # Long TTLs, and room for every name: nothing expires or is evicted.
    (work / "kubewire-dedup.toml").write_text(LONG_TTLS + f"max_entries = {2 * len(distinct)}\n")
    procs = {}
    try:
        procs["upstream"] = start_upstream(work, release)
        procs["kubewire"] = start("kubewire", "0-1", forwarding_kubewire(
            release, work, DEDUP_PORT, DEDUP_METRICS, "0-1", work / "kubewire-dedup.toml"), work)
        wait_up(procs, {"upstream": int(UPSTREAM.rsplit(":", 1)[1])}, work)
        wait_up(procs, {"kubewire": DEDUP_PORT}, work, "kubewire-dedup-ready.kubewire.internal")
        time.sleep(1)
        up_before, kw_before = metrics(UPSTREAM_METRICS), metrics(DEDUP_METRICS)
        print(f"$ dnsperf -p {DEDUP_PORT} -d dedup.txt -n 1 -c 32 -q 500 -Q {args.flood_rate}"
              f"   # {len(distinct)} distinct names × {ASKS}", flush=True)
        stats = dnsperf(DEDUP_PORT, work / "dedup.txt", "-c", "32", "-q", "500",
                        "-Q", str(args.flood_rate), "-t", "5")
        time.sleep(1)
        up_after, kw_after = metrics(UPSTREAM_METRICS), metrics(DEDUP_METRICS)

        def delta(after, before, name, **want):
            return total(after, name, **want) - total(before, name, **want)

        udp = sum(delta(up_after, up_before, "coredns_dns_requests_total", proto="udp", type=t)
                  for t in types)
        tcp = sum(delta(up_after, up_before, "coredns_dns_requests_total", proto="tcp", type=t)
                  for t in types)
        forwarded = delta(kw_after, kw_before, "coredns_proxy_request_duration_seconds_count")
        mismatched = delta(kw_after, kw_before, "kubewire_forward_mismatched_replies_total")
        d = len(distinct)
        print("\n| distinct names D | client queries | answered | lost | upstream got, UDP "
              "| ÷ D | upstream got, TCP | kubewire's upstream exchanges | mismatched replies |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        print(f"| {d} | {stats['sent']} | {stats['completed']} | {stats['lost']} | {udp} "
              f"| {udp / d:.3f} | {tcp} | {forwarded} | {mismatched} |")
        print("\nThe figure is the upstream's coredns_dns_requests_total (proto udp, types "
              f"{', '.join(types)}) over the run, ÷ D; goal 1.00. TCP queries are retries of "
              "answers truncated over UDP; kubewire's own count is "
              "coredns_proxy_request_duration_seconds_count summed over RCODEs (UDP and TCP, "
              "retries included).")
        print(f"kubewire's client RCODEs: {stats['rcodes']}")
    finally:
        stop(procs)


NODE_LOCAL_ADDRESS = "169.254.20.10"


def node_local_config(work):
    """A `[node_local]` config serving NODE_LOCAL_ADDRESS on RSS_PORT: a
    dummy interface where the kernel has the driver, else a bridge."""
    probe = subprocess.run(["ip", "link", "add", "kwprobe", "type", "dummy"], capture_output=True)
    kind = "dummy" if probe.returncode == 0 else "bridge"
    if kind == "dummy":
        subprocess.run(["ip", "link", "del", "kwprobe"], check=True)
    path = work / "node-local.toml"
    path.write_text(f"""[dns]
listen = ["{NODE_LOCAL_ADDRESS}:{RSS_PORT}"]
[node_local]
enabled = true
addresses = ["{NODE_LOCAL_ADDRESS}"]
interface = "kwbench0"
interface_kind = "{kind}"
[lifecycle]
lameduck_ms = 0
""")
    return path, kind


def part_rss(args, release, work):
    mode = "node-local mode, " if args.node_local else ""
    cache = "NodeLocal DNSCache's caches" if args.rss_target == "coredns" else "default [cache]"
    print(f"\n# 3. RSS under a unique-name flood ({mode}{cache}, {args.rss_target} on 2 CPUs)\n",
          flush=True)
    rng = random.Random(7)
    names = [f"u{i:x}-{rng.getrandbits(32):08x}.svc.cluster.local A" for i in range(args.names)]
    marks = sorted({max(1, int(args.names * mark)) for mark in RSS_MARKS})
    chunks, begin = [], 0
    for end in marks:
        path = work / f"flood-{end}.txt"
        path.write_text("\n".join(names[begin:end]) + "\n")
        chunks.append((end, path))
        begin = end
    procs = {}
    try:
        procs["upstream"] = start_upstream(work, release)
        argv = forwarding_kubewire(release, work, RSS_PORT, RSS_METRICS, "0-1")
        server = "127.0.0.1"
        if args.rss_target == "coredns":
            block = (f"{{\n    cache {{\n        success 9984 30\n        denial 9984 5\n    }}\n"
                     f"    forward . {UPSTREAM} {{\n        force_tcp\n    }}\n"
                     f"    prometheus {RSS_METRICS}\n}}\n")
            (work / "Corefile-rss").write_text(
                f"cluster.local:{RSS_PORT} in-addr.arpa:{RSS_PORT} ip6.arpa:{RSS_PORT} {block}"
                f".:{RSS_PORT} {{\n    cache 30\n    forward . {UPSTREAM}\n    prometheus {RSS_METRICS}\n}}\n")
            os.environ["GOMAXPROCS"] = "2"
            argv = [peers_bin("coredns"), "-conf", str(work / "Corefile-rss")]
        if args.node_local:
            config, kind = node_local_config(work)
            argv = [a for a in argv if a != f"127.0.0.1:{RSS_PORT}" and a != "--listen"]
            argv += ["--config", str(config)]
            server = NODE_LOCAL_ADDRESS
            print(f"kubewire in node-local mode on {server}:{RSS_PORT}, interface kind {kind}",
                  flush=True)
        procs["kubewire"] = start(args.rss_target, "0-1", argv, work)
        wait_up(procs, {"upstream": int(UPSTREAM.rsplit(":", 1)[1])}, work)
        if args.node_local or args.rss_target == "coredns":
            time.sleep(2)
        else:
            wait_up(procs, {"kubewire": RSS_PORT}, work, "kubewire-rss-ready.kubewire.internal")
        time.sleep(1)
        pid = procs["kubewire"].pid

        def status(field):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
            return 0.0

        print(f"$ dnsperf -s {server} -p {RSS_PORT} -n 1 -c 16 -q 500 -Q {args.flood_rate}   "
              f"# {args.names} unique names, in {len(chunks)} pieces", flush=True)
        print("\n| names sent | seconds | VmRSS MiB | VmHWM MiB | cache entries | cache bytes "
              "| evictions | lost (so far) | RCODEs (last piece) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        began, lost = time.time(), 0

        def row(sent, rcodes=""):
            rows = metrics(RSS_METRICS)
            print(f"| {sent} | {time.time() - began:.0f} | {status('VmRSS'):.1f} "
                  f"| {status('VmHWM'):.1f} | {total(rows, 'coredns_cache_entries')} "
                  f"| {total(rows, 'kubewire_cache_bytes')} "
                  f"| {total(rows, 'coredns_cache_evictions_total')} | {lost} | {rcodes} |",
                  flush=True)
            return rows

        row(0)
        sent, begin = 0, 0
        for end, path in chunks:
            # Bounded: at most twice the piece's time at the asked rate.
            limit = 2 * (end - begin) // args.flood_rate + 5
            begin = end
            stats = dnsperf(RSS_PORT, path, "-c", "16", "-q", "500", "-Q", str(args.flood_rate),
                            "-t", "3", "-l", str(limit), server=server)
            sent += stats["sent"]
            lost += stats["lost"]
            rows = row(sent, stats["rcodes"])
        print(f"\nAt the end: coredns_cache_entries {total(rows, 'coredns_cache_entries')} "
              f"(cap: max_entries 10000), kubewire_cache_bytes "
              f"{total(rows, 'kubewire_cache_bytes')} (cap: max_bytes 16777216), "
              f"kubewire_forward_mismatched_replies_total "
              f"{total(rows, 'kubewire_forward_mismatched_replies_total')}.")
    finally:
        if args.node_local and "kubewire" in procs:
            # SIGTERM, so that it removes its interface and rules.
            procs["kubewire"].send_signal(signal.SIGTERM)
            try:
                procs["kubewire"].wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        stop(procs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("hits", "upstream", "rss", "all"), default="all")
    ap.add_argument("--rate", type=int, default=50000, help="part 1's offered qps")
    ap.add_argument("--seconds", type=int, default=5, help="part 1's seconds per run")
    ap.add_argument("--rounds", type=int, default=3, help="part 1's rounds")
    ap.add_argument("--names", type=int, default=1000000, help="part 3's unique names")
    ap.add_argument("--flood-rate", type=int, default=20000,
                    help="qps of warming (part 1), of part 2 and of part 3")
    ap.add_argument("--out-dir", default="", help="part 1's compare reports")
    ap.add_argument("--node-local", action="store_true",
                    help="part 3 with kubewire in node-local mode (needs root)")
    ap.add_argument("--rss-target", choices=("kubewire", "coredns"), default="kubewire",
                    help="part 3's server: kubewire, or CoreDNS with NodeLocal DNSCache's Corefile")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--before", default="",
                    help="part 1: another kubewire binary, served beside the built one as `before`")
    ap.add_argument("--no-peers", action="store_true", help="part 1 without Unbound and dnsdist")
    args = ap.parse_args()
    ensure_sbin_tools(["unbound", "dnsdist", "dnsperf"])
    release = ROOT / "target" / "release"
    if not args.no_build:
        run(["cargo", "build", "--release", "-p", "kubewire", "-p", "kubewire-bench"], cwd=ROOT)
    work = Path(tempfile.mkdtemp(prefix="kubewire-cache-bench-"))
    print(f"work directory: {work}")
    bench = str(release / "kubewire-bench")
    run([bench, "scenario", *SCENARIO, "--out-dir", str(work / "scenario")], stdout=subprocess.DEVNULL)
    # The forwarding kubewire serves no objects: every scenario name, the
    # reverse ones included, is forwarded.
    (work / "empty.json").write_text('{"apiVersion": "v1", "kind": "List", "items": []}\n')
    if args.part in ("hits", "all"):
        part_hits(args, release, bench, work)
    if args.part in ("upstream", "all"):
        part_upstream(args, release, work)
    if args.part in ("rss", "all"):
        part_rss(args, release, work)


if __name__ == "__main__":
    main()
