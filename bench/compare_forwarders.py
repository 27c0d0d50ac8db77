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

Usage: python3 bench/compare_forwarders.py [--rate 20000] [--seconds 5] [--rounds 3]
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
from pathlib import Path

from benchlib import peers_bin

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ["--services", "1000", "--headless-every", "5", "--endpoints-per-headless", "10",
            "--pods", "1000", "--namespaces", "10", "--queries", "100000", "--seed", "1"]
UPSTREAM = "127.0.0.1:5400"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools():
    missing = [tool for tool in ("unbound", "dnsdist") if not shutil.which(tool)
               and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        run(["apt-get", "install", "-y", "-qq", *missing], stdout=subprocess.DEVNULL)


def start(name, cpu, argv, work):
    log = open(work / f"{name}.log", "w")
    proc = subprocess.Popen(["taskset", "-c", cpu, *argv], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out-dir", default="")
    args = ap.parse_args()
    ensure_tools()
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
  cache-max-ttl: 0
  cache-max-negative-ttl: 0
  num-queries-per-thread: 4096
  outgoing-range: 8192
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@5400
""")
    # No cache anywhere: this measures a forwarded miss.
    (work / "kubewire.toml").write_text("[cache]\nenabled = false\n")
    (work / "dnsdist.conf").write_text(f"""setLocal("127.0.0.1:5303")
newServer({{address="{UPSTREAM}"}})
setSecurityPollSuffix("")
""")
    (work / "Corefile").write_text(f""".:5304 {{
    forward . {UPSTREAM}
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
        procs["kubewire"] = start("kubewire", "0", [str(release / "kubewire"), "--manifests",
                                  str(work / "empty.json"), "--zone",
                                  "kubewire.internal", "--cores", "0-0", "--listen", "127.0.0.1:5301",
                                  "--forward", UPSTREAM, "--health-addr", "", "--ready-addr", "",
                                  "--metrics-addr", "127.0.0.1:0", "--config",
                                  str(work / "kubewire.toml")], work)
        procs["unbound"] = start("unbound", "0", ["unbound", "-d", "-c", str(work / "unbound.conf")], work)
        procs["dnsdist"] = start("dnsdist", "0", ["dnsdist", "--supervised", "--disable-syslog", "-C",
                                 str(work / "dnsdist.conf")], work)
        os.environ["GOMAXPROCS"] = "1"
        procs["coredns"] = start("coredns", "0", [peers_bin("coredns"), "-conf", str(work / "Corefile")], work)
        time.sleep(3)
        for name, proc in procs.items():
            if proc.poll() is not None:
                sys.exit(f"{name} exited at start; see {work / (name + '.log')}")
        targets = [("null", 5300), ("upstream", 5400), ("kubewire", 5301), ("unbound", 5302),
                   ("dnsdist", 5303), ("coredns", 5304)]
        out_dir = Path(args.out_dir) if args.out_dir else work / "compare"
        cmd = [bench, "compare", "--queries", str(work / "scenario" / "queries.txt"),
               "--rate", str(args.rate), "--seconds", str(args.seconds), "--rounds", str(args.rounds),
               "--cpus", "1", "--out-dir", str(out_dir)]
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
    finally:
        for proc in procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


if __name__ == "__main__":
    main()
