#!/usr/bin/env python3
"""Forwarding, side by side: kubewire, Unbound, dnsdist and CoreDNS forwarding the
same queries to the same upstream, with no cache anywhere, next to the null
responder (the floor) and the upstream itself (to see the hop's latency).

- The upstream is a kubewire serving the scenario cluster
  (`kubewire-bench scenario`) in `cluster.local`, pinned to CPU 1.
- Each forwarder is pinned to CPU 0 and sends everything to the upstream:
  kubewire with `--forward` and its cache off (its own zone is another, so
  every query of the scenario is forwarded), Unbound with a forward zone for "." and every
  cache TTL at 0, dnsdist with one backend and no packet cache, CoreDNS
  (bench/peers/build.sh) with `forward` alone and GOMAXPROCS=1.
  kubewire serves an empty cluster, and Unbound's RFC 1918 reverse zones are
  unblocked, so that every target forwards every query.
- The load (`kubewire-bench compare`) runs on CPU 1, in interleaved rounds.

The ruling figure is each forwarder's CPU per answered query, as a ratio to
the null responder's, and the latency a hop adds is the forwarder's p50/p99
against the upstream's own.

With --cache, every cache is on (kubewire's, Unbound's, dnsdist's packet
cache, CoreDNS's `cache 30`) and every query asks a name never asked before
(`kubewire-bench compare --unique-names`): a miss with the cache's costs.
With --baseline PATH, a kubewire binary built before a change runs beside
the current one (`kubewire-before`), and --aa adds a second copy of the
current binary (`kubewire-aa`), whose ratio to `kubewire` is the run's noise.
kubewire's socket opens per 1000 forwarded queries are read from its
`coredns_proxy_conn_cache_{hits,misses}_total` after the run.

With --udp-io MODE, kubewire (and kubewire-aa) serve with `dns.udp_io = MODE`
(`io_uring` carries the upstream sockets on the core's ring too); the
baseline keeps the default unless --baseline-udp-io says otherwise.
With --two-listens every kubewire also listens on 127.0.0.2 (the load
still goes to 127.0.0.1), as node-local mode listens on two addresses.

Usage: python3 bench/compare_forwarders.py [--rate 20000] [--seconds 5] [--rounds 3]
           [--cache] [--baseline PATH] [--aa] [--udp-io MODE] [--baseline-udp-io MODE]
           [--two-listens]
Needs root on first run: installs unbound and dnsdist from Debian.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchlib import ensure_sbin_tools, peers_bin, run, start

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ["--services", "1000", "--headless-every", "5", "--endpoints-per-headless", "10",
            "--pods", "1000", "--namespaces", "10", "--queries", "100000", "--seed", "1"]
UPSTREAM = "127.0.0.1:5400"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out-dir", default="")
    ap.add_argument("--cache", action="store_true",
                    help="every cache on, every query a new name")
    ap.add_argument("--baseline", default="",
                    help="a kubewire binary from before a change, run as kubewire-before")
    ap.add_argument("--aa", action="store_true",
                    help="a second copy of the current kubewire, as kubewire-aa")
    ap.add_argument("--udp-io", default="",
                    help="dns.udp_io for kubewire and kubewire-aa (batched, glommio, io_uring)")
    ap.add_argument("--two-listens", action="store_true",
                    help="kubewire listens on 127.0.0.2 too, as node-local mode does")
    ap.add_argument("--baseline-udp-io", default="",
                    help="dns.udp_io for kubewire-before")
    args = ap.parse_args()
    ensure_sbin_tools(["unbound", "dnsdist"])
    release = ROOT / "target" / "release"
    run(["cargo", "build", "--release", "-p", "kubewire", "-p", "kubewire-bench"], cwd=ROOT)
    work = Path(tempfile.mkdtemp(prefix="kubewire-forward-bench-"))
    bench = str(release / "kubewire-bench")
    run([bench, "scenario", *SCENARIO, "--out-dir", str(work / "scenario")], stdout=subprocess.DEVNULL)
    (work / "unbound.conf").write_text(f"""server:
  interface: 127.0.0.1@5302
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
{"" if args.cache else '''  cache-max-ttl: 0
  cache-max-negative-ttl: 0
'''}  num-queries-per-thread: 4096
  outgoing-range: 8192
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@5400
""")
    # No cache anywhere, or every cache on and every name new: this
    # measures a forwarded miss.
    def kubewire_config(udp_io):
        text = "" if args.cache else "[cache]\nenabled = false\n"
        return text + (f'[dns]\nudp_io = "{udp_io}"\n' if udp_io else "")
    (work / "kubewire.toml").write_text(kubewire_config(args.udp_io))
    (work / "kubewire-before.toml").write_text(kubewire_config(args.baseline_udp_io))
    packet_cache = ('pc = newPacketCache(100000)\ngetPool(""):setCache(pc)\n'
                    if args.cache else "")
    (work / "dnsdist.conf").write_text(f"""setLocal("127.0.0.1:5303")
newServer({{address="{UPSTREAM}"}})
setSecurityPollSuffix("")
{packet_cache}""")
    coredns_cache = "    cache 30\n" if args.cache else ""
    (work / "Corefile").write_text(f""".:5304 {{
{coredns_cache}    forward . {UPSTREAM}
}}
""")
    # kubewire serves no cluster of its own (the demo owns two of the
    # scenario's reverse names), so every query is forwarded.
    (work / "empty.json").write_text('{"apiVersion": "v1", "kind": "List", "items": []}\n')
    procs = {}
    try:
        procs["upstream"] = start("upstream", "1", [str(release / "kubewire"), "--manifests",
                                  str(work / "scenario" / "manifests.json"), "--cores", "1-1",
                                  "--listen", UPSTREAM, "--health-addr", "", "--ready-addr", "",
                                  "--metrics-addr", ""], work)
        procs["null"] = start("null", "0", [str(release / "kubewire-null-responder"),
                              "127.0.0.1:5300", "0"], work)
        def forwarder(name, binary, port, metrics_port):
            config = "kubewire-before.toml" if name == "kubewire-before" else "kubewire.toml"
            listen = f"127.0.0.1:{port}" + (f",127.0.0.2:{port}" if args.two_listens else "")
            return [binary, "--manifests", str(work / "empty.json"), "--zone",
                    "kubewire.internal", "--cores", "0-0", "--listen", listen,
                    "--forward", UPSTREAM, "--health-addr", "", "--ready-addr", "",
                    "--metrics-addr", f"127.0.0.1:{metrics_port}", "--config",
                    str(work / config)]
        kubewires = [("kubewire", str(release / "kubewire"), 5301, 9161)]
        if args.baseline:
            kubewires.append(("kubewire-before", args.baseline, 5305, 9162))
        if args.aa:
            # A copy of its own, so that the two are two files.
            shutil.copy(release / "kubewire", work / "kubewire-aa")
            kubewires.append(("kubewire-aa", str(work / "kubewire-aa"), 5306, 9163))
        for name, binary, port, metrics_port in kubewires:
            procs[name] = start(name, "0", forwarder(name, binary, port, metrics_port), work)
        procs["unbound"] = start("unbound", "0", ["unbound", "-d", "-c", str(work / "unbound.conf")], work)
        procs["dnsdist"] = start("dnsdist", "0", ["dnsdist", "--supervised", "--disable-syslog", "-C",
                                 str(work / "dnsdist.conf")], work)
        os.environ["GOMAXPROCS"] = "1"
        procs["coredns"] = start("coredns", "0", [peers_bin("coredns"), "-conf", str(work / "Corefile")], work)
        time.sleep(3)
        for name, proc in procs.items():
            if proc.poll() is not None:
                sys.exit(f"{name} exited at start; see {work / (name + '.log')}")
        targets = [("null", 5300), ("upstream", 5400)]
        targets += [(name, port) for name, _, port, _ in kubewires]
        targets += [("unbound", 5302), ("dnsdist", 5303), ("coredns", 5304)]
        if args.cache:
            # The upstream has no cache to fill: asking it new names
            # directly measures nothing new.
            targets = [t for t in targets if t[0] != "upstream"]
        out_dir = Path(args.out_dir) if args.out_dir else work / "compare"
        queries = work / "scenario" / "queries.txt"
        if args.cache:
            # New names under the upstream's zone (NXDOMAIN, cached by every
            # cache from the SOA); the first label, 16 bytes, is rewritten
            # per query, so no name repeats.
            queries = work / "new-names.txt"
            queries.write_text("".join(f"{'x' * 16}.n{i}.default.svc.cluster.local {kind}\n"
                                       for i in range(1000) for kind in ("A", "AAAA")))
        cmd = [bench, "compare", "--queries", str(queries),
               "--rate", str(args.rate), "--seconds", str(args.seconds), "--rounds", str(args.rounds),
               "--cpus", "1", "--out-dir", str(out_dir)]
        if args.cache:
            cmd.append("--unique-names")
        for name, port in targets:
            cmd += ["--target", f"{name}=127.0.0.1:{port}@{procs[name].pid}"]
        print("$", " ".join(cmd), flush=True)
        run(cmd)
        # p50 and p99 of each target's runs, from the JSON reports.
        print("\n| target | p50 µs (median of rounds) | p99 µs (median of rounds) |")
        print("| --- | --- | --- |")
        for name, _ in targets:
            p50s, p99s = [], []
            for report in sorted(out_dir.glob(f"{name}-round*.json")):
                data = json.loads(report.read_text())
                latency = data.get("latency_us") or {}
                if "p50" in latency:
                    p50s.append(latency["p50"])
                    p99s.append(latency["p99"])
            if p50s:
                p50s.sort()
                p99s.sort()
                print(f"| {name} | {p50s[len(p50s) // 2]} | {p99s[len(p99s) // 2]} |")
        print("\n| kubewire | upstream UDP queries | sockets opened | opened per 1000 |")
        print("| --- | --- | --- | --- |")
        for name, _, _, metrics_port in kubewires:
            hits, misses = socket_counts(metrics_port)
            total = hits + misses
            per_1000 = 1000 * misses / total if total else float("nan")
            print(f"| {name} | {total:.0f} | {misses:.0f} | {per_1000:.1f} |")
    finally:
        for proc in procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def socket_counts(metrics_port):
    """kubewire's UDP connection-cache hits and misses (sockets opened)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    hits = misses = 0.0
    for line in body.splitlines():
        if 'proto="udp"' not in line:
            continue
        if line.startswith("coredns_proxy_conn_cache_hits_total"):
            hits += float(line.rsplit(" ", 1)[1])
        elif line.startswith("coredns_proxy_conn_cache_misses_total"):
            misses += float(line.rsplit(" ", 1)[1])
    return hits, misses


if __name__ == "__main__":
    main()
