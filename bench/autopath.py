#!/usr/bin/env python3
"""Autopath, side by side: what a pod's `ndots:5` search walk costs against
kubewire with autopath, kubewire without it, and Unbound.

The client behaves like glibc's getaddrinfo for AF_UNSPEC with the pod's
resolv.conf (`search <ns>.svc.cluster.local svc.cluster.local cluster.local`,
`options ndots:5`): a name with fewer than five dots is tried with each
search domain in turn, then as it is; for each try it sends A and AAAA
together on one socket and waits for both; it stops at the first try where
either reply has an answer record (an NXDOMAIN or a NODATA goes on).

The names are `host<i>.bench.example` (two dots), with A and AAAA records
served by NSD, the only upstream. The targets:
- `kubewire-autopath`: kubewire with `kubernetes.autopath`, forwarding to
  NSD with its cache on; the client sends from 127.0.0.2, the address of a
  pod in namespace `bench` in the manifests it serves.
- `kubewire`: the same kubewire without autopath.
- `unbound`: Unbound as the client's resolver, with `cluster.local`
  stubbed to the second kubewire and `.` forwarded to NSD, cache on.

Each target resolves every name twice: a cold pass (empty caches) and a warm
pass. Reported per resolved name: queries the client sent, and wall time.

Usage: python3 bench/autopath.py [--names 500] [--no-build]
Needs nsd and unbound (apt-get install nsd unbound).
"""

import argparse
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import start, stop

REPO = Path(__file__).resolve().parent.parent
NSD_PORT, KW_AUTOPATH_PORT, KW_PORT, UNBOUND_PORT = 5501, 5502, 5503, 5504
SEARCH = ["bench.svc.cluster.local", "svc.cluster.local", "cluster.local"]
CLIENT_IP = "127.0.0.2"


def query(name, qtype, qid):
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    # EDNS, as glibc sends with `options edns0` off: a plain query; an OPT
    # keeps big answers whole.
    opt = b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0)
    return header + qname + struct.pack(">HH", qtype, 1) + opt


def rcode_and_answers(reply):
    return reply[3] & 0x0F, struct.unpack(">H", reply[6:8])[0]


def resolve(sock, server, name):
    """glibc's walk for one name; (queries sent, resolved)."""
    candidates = [f"{name}.{d}" for d in SEARCH] if name.count(".") < 5 else []
    candidates.append(name)
    sent = 0
    for candidate in candidates:
        ids = {random.getrandbits(16): qt for qt in (1, 28)}
        while len(ids) < 2:
            ids = {random.getrandbits(16): qt for qt in (1, 28)}
        for qid, qtype in ids.items():
            sock.sendto(query(candidate, qtype, qid), server)
            sent += 1
        replies = {}
        deadline = time.monotonic() + 2
        while len(replies) < 2 and time.monotonic() < deadline:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data, _ = sock.recvfrom(65535)
            except socket.timeout:
                break
            qid = struct.unpack(">H", data[:2])[0]
            if qid in ids:
                replies[qid] = rcode_and_answers(data)
        if any(answers > 0 for (_, answers) in replies.values()):
            return sent, True
    return sent, False


def run_pass(server, names, source):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    total, resolved = 0, 0
    began = time.monotonic()
    for name in names:
        sent, ok = resolve(sock, server, name)
        total += sent
        resolved += ok
    took = time.monotonic() - began
    sock.close()
    return total, resolved, took


def write_configs(work, names):
    zone = ["$ORIGIN bench.example.", "$TTL 3600",
            "@ SOA ns.bench.example. hostmaster.bench.example. 1 3600 600 86400 3600",
            "@ NS ns.bench.example.", "ns A 127.0.0.1"]
    for i, name in enumerate(names):
        host = name.split(".")[0]
        zone.append(f"{host} A 192.0.2.{i % 250 + 1}")
        zone.append(f"{host} AAAA 2001:db8::{i + 1:x}")
    (work / "bench.example.zone").write_text("\n".join(zone) + "\n")
    (work / "nsd.conf").write_text(f"""server:
  ip-address: 127.0.0.1@{NSD_PORT}
  server-count: 1
  username: ""
  zonesdir: "{work}"
  database: ""
  pidfile: "{work}/nsd.pid"
  zonelistfile: "{work}/zone.list"
  xfrdfile: "{work}/xfrd.state"
  verbosity: 0
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: bench.example
  zonefile: bench.example.zone
""")
    (work / "manifests.yaml").write_text(f"""apiVersion: v1
kind: Namespace
metadata: {{name: bench}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: bench}}
status: {{phase: Running, podIP: {CLIENT_IP}}}
""")
    for name, autopath in (("kubewire-autopath", "true"), ("kubewire", "false")):
        (work / f"{name}.toml").write_text(f"""[kubernetes]
autopath = {autopath}
autopath_resolv_conf = ""
""")
    (work / "unbound.conf").write_text(f"""server:
  interface: 127.0.0.1@{UNBOUND_PORT}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{work}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  num-threads: 1
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  qname-minimisation: no
  local-zone: "cluster.local." nodefault
stub-zone:
  name: "cluster.local"
  stub-addr: 127.0.0.1@{KW_PORT}
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@{NSD_PORT}
""")


def kubewire(release, work, name, port):
    return [str(release / "kubewire"), "--manifests", str(work / "manifests.yaml"),
            "--config", str(work / f"{name}.toml"), "--listen", f"127.0.0.1:{port}",
            "--forward", f"127.0.0.1:{NSD_PORT}", "--cores", "1", "--health-addr", "",
            "--ready-addr", "", "--metrics-addr", ""]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--names", type=int, default=500)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "kubewire"], cwd=REPO, check=True)
    release = REPO / "target" / "release"
    work = Path(tempfile.mkdtemp(prefix="kubewire-autopath-"))
    names = [f"host{i}.bench.example" for i in range(args.names)]
    write_configs(work, names)
    procs = {}
    try:
        for name, argv in (
            ("nsd", ["nsd", "-d", "-c", str(work / "nsd.conf")]),
            ("kubewire-autopath", kubewire(release, work, "kubewire-autopath", KW_AUTOPATH_PORT)),
            ("kubewire", kubewire(release, work, "kubewire", KW_PORT)),
            ("unbound", ["unbound", "-d", "-c", str(work / "unbound.conf")]),
        ):
            procs[name] = start(name, None, argv, work)
        time.sleep(2)
        for name, proc in procs.items():
            if proc.poll() is not None:
                sys.exit(f"{name} exited at start; see {work / (name + '.log')}")
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip()
        print(f"kubewire {commit}; {len(names)} names `hostN.bench.example`, glibc-like walk "
              f"with ndots:5 (A and AAAA together); logs in {work}\n")
        print("| resolver | pass | queries per name | ms per name | resolved |")
        print("| --- | --- | --- | --- | --- |")
        for target, port, source in (("kubewire-autopath", KW_AUTOPATH_PORT, CLIENT_IP),
                                     ("kubewire", KW_PORT, CLIENT_IP),
                                     ("unbound", UNBOUND_PORT, CLIENT_IP)):
            for label in ("cold", "warm"):
                total, resolved, took = run_pass(("127.0.0.1", port), names, source)
                print(f"| {target} | {label} | {total / len(names):.2f} "
                      f"| {1000 * took / len(names):.3f} | {resolved}/{len(names)} |", flush=True)
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
