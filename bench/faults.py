#!/usr/bin/env python3
"""Faults, side by side: what hostile TCP clients and an NXDOMAIN flood cost
kubewire's UDP service, in two parts. Each server is pinned to CPU 0, the
load (`kubewire-bench compare`, in interleaved rounds) to CPU 1, and every
server serves the scenario cluster (`kubewire-bench scenario`).

1. tcp: idle TCP connections and slowloris clients under UDP load.
   Three targets, at a fixed UDP rate (default 20000 qps):
   - `null`: the null responder (the floor);
   - `quiet`: kubewire, one core;
   - `attacked`: an identical kubewire, attacked for the whole run by a
     helper process of this script (on CPU 1, with the load): `--idle`
     (2000) TCP connections that send nothing, each opened again when
     kubewire closes it, and `--slow` (50) slowloris clients that send a
     framed query one byte every `--slow-interval` (1 s), length prefix
     first, and connect again when closed.
   Both kubewires run with `tcp.max_connections = 4096` (from a `--config`
   file; the default, 1024 per core, would close the 1025th connection at
   once), so that the 2000 connections are really held, and the default
   `tcp.idle_timeout_ms` (10 s): kubewire closes an idle connection after
   10 s, the attacker opens it again, and about 2000 stay open. The
   per-pair table of compare gives attacked ÷ quiet of QPS, p99 and CPU
   per query. Both kubewires share CPU 0, so the work of the attack (accepts,
   timeouts) also takes CPU from `quiet` while it is measured; it shows in
   `attacked`'s own CPU per query, measured from its own threads.
   Reported besides: p50/p99, VmRSS of both kubewires (before, during and
   after the attack, `quiet` being the control for what UDP load alone does),
   their open file descriptors and the kernel's ESTABLISHED count on the
   attacked port, the attacker's open connections at the end of the run,
   and how kubewire closed them (connection lifetimes as the attacker sees
   them, resets, refusals).
2. nxdomain: CPU per query of an NXDOMAIN flood against A hits. Two query
   files from the scenario: the lines `NAME A` of queries.txt whose name has
   an A record (checked by asking kubewire), and as many unique random names
   `r<hex>.<namespace>.svc.cluster.local A` in the scenario's namespaces
   (NXDOMAIN, checked on a sample: RCODE 3, not NODATA). compare sends one
   file to all its targets, so it runs once per file and round, with targets
   null and kubewire: A, NX, A, NX, ... for `--rounds` rounds at a fixed rate
   (default 50000 qps). Reported: kubewire's CPU per query for each file,
   each ÷ the null responder's in the same run, and NX ÷ A (goal: within
   10%).

1b. tls: the same against each kubewire's DNS-over-TLS port (`--part tls`):
   `--idle` clients that finish a TLS handshake and then send nothing (held
   for the run: tcp.idle_timeout_ms is raised to 600 s), and `--slow` ones
   that send a real ClientHello one byte per `--slow-interval` and never
   finish (kubewire closes them after tls.handshake_timeout_ms, 5 s).

Usage: python3 bench/faults.py [--part tcp|tls|nxdomain|all] [--rate 20000] [--nx-rate 50000]
           [--seconds 5] [--rounds 3] [--idle 2000] [--slow 50] [--no-build]
Installs nothing. Raises RLIMIT_NOFILE (within the hard limit, unless root) for
the attacker and the kubewires it starts, and checks it in /proc/PID/limits.
"""

import argparse
import errno
import json
import os
import random
import re
import resource
import selectors
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from benchlib import run, self_signed_cert, start, stop, wait_up

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ["--services", "1000", "--headless-every", "5", "--endpoints-per-headless", "10",
            "--pods", "1000", "--namespaces", "10", "--queries", "100000", "--seed", "1"]
# Part 1's targets, and part 2's.
TCP_PORTS = {"null": 5340, "quiet": 5341, "attacked": 5342}
TCP_METRICS = {"quiet": "127.0.0.1:9341", "attacked": "127.0.0.1:9342"}
# Part 1 with --part tls: each kubewire's DNS-over-TLS port.
TLS_PORTS = {"quiet": 8851, "attacked": 8852}
NX_PORTS = {"null": 5345, "kubewire": 5346}
NX_METRICS = "127.0.0.1:9346"
MAX_CONNECTIONS = 4096
TYPES = {"A": 1, "NS": 2, "SOA": 6, "PTR": 12, "AAAA": 28, "SRV": 33}
READY_NAME = "svc-0.ns-0.svc.cluster.local"
NX_CHECKED = 500


def query_packet(qid, name, qtype):
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        packet += bytes([len(label)]) + label.encode()
    return packet + b"\0" + struct.pack("!HH", TYPES[qtype], 1)


class Asker:
    """Queries over one UDP socket: (rcode, answer count) or None."""

    def __init__(self, port, timeout=0.5):
        self.addr = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)

    def ask(self, name, qtype="A"):
        qid = random.randrange(65536)
        self.sock.sendto(query_packet(qid, name, qtype), self.addr)
        deadline = time.time() + self.sock.gettimeout()
        while time.time() < deadline:
            try:
                reply = self.sock.recv(65535)
            except socket.timeout:
                return None
            if len(reply) >= 12 and struct.unpack("!H", reply[:2])[0] == qid:
                flags, _, ancount = struct.unpack("!HHH", reply[2:8])
                return flags & 0xF, ancount
        return None

    def close(self):
        self.sock.close()


def answers_ready_name(port):
    asker = Asker(port, 0.3)
    try:
        return asker.ask(READY_NAME) is not None
    finally:
        asker.close()


def kubewire(release, work, name, port, metrics_addr, config=None, extra=()):
    argv = [str(release / "kubewire"), "--manifests", str(work / "scenario" / "manifests.json"),
            "--cores", "0-0", "--listen", f"127.0.0.1:{port}", "--health-addr", "",
            "--ready-addr", "", "--metrics-addr", metrics_addr, *extra]
    if config:
        argv += ["--config", str(config)]
    return start(name, "0", argv, work)


def median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


def reports(out_dir, name):
    return [json.loads(path.read_text()) for path in sorted(out_dir.glob(f"{name}-round*.json"))]


def log_problems(path):
    """WARN and ERROR lines of a kubewire log."""
    lines = path.read_text(errors="replace").splitlines()
    return [line for line in lines if re.search(r"\b(WARN|ERROR)\b", line)]


def raise_nofile(want):
    """Raises this process's RLIMIT_NOFILE (children inherit it) to `want`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


# ---------------------------------------------------------------- attacker


class Conn:
    __slots__ = ("sock", "kind", "state", "began", "established", "sent", "received", "next_send")

    def __init__(self, sock, kind, now):
        self.sock, self.kind, self.state = sock, kind, "connecting"
        self.began, self.established = now, None
        self.sent, self.received, self.next_send = 0, 0, None


def attack(args):
    """The hostile TCP clients: a process of its own, pinned by the caller.

    Keeps `--idle` connections that never send and `--slow` ones that send a
    framed query one byte per `--slow-interval`, opening each again when the
    server closes it; writes what it sees to `--status` twice a second."""
    need = args.idle + args.slow + 256
    have = raise_nofile(need)
    if have < need:
        sys.exit(f"attacker: RLIMIT_NOFILE is {have}, {need} needed")
    host, port = args.attack.rsplit(":", 1)
    addr = (host, int(port))
    query = query_packet(0x4b57, READY_NAME, "A")
    payload = struct.pack("!H", len(query)) + query
    tls = None
    if args.tls:
        # Idle clients finish a handshake and then send nothing; slow ones
        # send a real ClientHello, one byte per interval, and never finish.
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        outgoing = ssl.MemoryBIO()
        hello = tls.wrap_bio(ssl.MemoryBIO(), outgoing)
        try:
            hello.do_handshake()
        except ssl.SSLWantReadError:
            pass
        payload = outgoing.read()
    want = {"idle": args.idle, "slow": args.slow}
    sel = selectors.DefaultSelector()
    live = {"idle": set(), "slow": set()}
    reopen = []  # (time, kind): a slot waiting to be opened again
    stats = {kind: {"connects": 0, "established": 0, "connect_failures": Counter(),
                    "server_closes": 0, "resets": 0, "closed_at_once": 0, "replies": 0,
                    "lifetime": Counter(), "sent_at_close": Counter()} for kind in want}
    connecting = 0
    began = time.monotonic()

    def open_one(kind, now):
        nonlocal connecting
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        conn = Conn(sock, kind, now)
        stats[kind]["connects"] += 1
        live[kind].add(conn)
        connecting += 1
        err = sock.connect_ex(addr)
        if err == 0:
            connecting -= 1
            established(conn, now)
        elif err in (errno.EINPROGRESS, errno.EAGAIN):
            sel.register(sock, selectors.EVENT_WRITE, conn)
        else:
            fail(conn, err, now)

    def established(conn, now):
        if tls and conn.kind == "idle" and conn.state != "handshaking":
            conn.sock = tls.wrap_socket(conn.sock, do_handshake_on_connect=False)
            conn.state = "handshaking"
            try:
                sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            sel.register(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
            return
        conn.state, conn.established = "open", now
        stats[conn.kind]["established"] += 1
        if conn.kind == "slow":
            conn.next_send = now + random.uniform(0, args.slow_interval)
        try:
            sel.register(conn.sock, selectors.EVENT_READ, conn)
        except KeyError:
            sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def drop(conn, now, delay):
        try:
            sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        live[conn.kind].discard(conn)
        reopen.append((now + delay, conn.kind))

    def fail(conn, err, now):
        nonlocal connecting
        if conn.state == "connecting":
            connecting -= 1
        stats[conn.kind]["connect_failures"][os.strerror(err) if err else "timeout"] += 1
        drop(conn, now, 0.2)

    def closed(conn, now, reset):
        s = stats[conn.kind]
        life = now - conn.established
        s["resets" if reset else "server_closes"] += 1
        s["lifetime"][round(life, 1)] += 1
        s["sent_at_close"][conn.sent] += 1
        at_once = life < 0.5 and conn.sent == 0
        if at_once:
            s["closed_at_once"] += 1
        # A connection closed at once (a limit) is opened again a bit later.
        drop(conn, now, 0.1 if at_once else 0.0)

    def percentile(counter, q):
        total = sum(counter.values())
        if not total:
            return None
        seen = 0
        for value in sorted(counter):
            seen += counter[value]
            if seen >= q * total:
                return value
        return None

    def write_status(now):
        out = {"t": time.time(), "elapsed": now - began, "connecting": connecting,
               "open": {kind: sum(1 for c in live[kind] if c.state == "open") for kind in want}}
        for kind, s in stats.items():
            out[kind] = {key: (dict(value) if isinstance(value, Counter) else value)
                         for key, value in s.items() if key not in ("lifetime", "sent_at_close")}
            out[kind]["lifetime_s"] = {f"p{int(q * 100)}": percentile(s["lifetime"], q)
                                       for q in (0.0, 0.5, 1.0)}
            out[kind]["sent_at_close"] = {f"p{int(q * 100)}": percentile(s["sent_at_close"], q)
                                          for q in (0.0, 0.5, 1.0)}
        tmp = Path(args.status + ".tmp")
        tmp.write_text(json.dumps(out))
        tmp.rename(args.status)

    now = time.monotonic()
    for kind in ("slow", "idle"):
        reopen += [(now, kind)] * want[kind]
    next_status = now
    while True:
        now = time.monotonic()
        # Open what is due, at most 256 handshakes at once.
        reopen.sort(key=lambda item: item[0])
        while reopen and reopen[0][0] <= now and connecting < 256:
            open_one(reopen.pop(0)[1], now)
        timeout = 0.05
        for key, mask in sel.select(timeout):
            conn = key.data
            if conn.state == "connecting":
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(conn, err, now)
                else:
                    connecting -= 1
                    established(conn, now)
                continue
            if conn.state == "handshaking":
                try:
                    conn.sock.do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                except OSError:
                    fail(conn, 0, now)
                    continue
                established(conn, now)
                continue
            try:
                data = conn.sock.recv(4096)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            except OSError:
                closed(conn, now, reset=True)
                continue
            if not data:
                closed(conn, now, reset=False)
            else:
                conn.received += len(data)
                stats[conn.kind]["replies"] += 1
        now = time.monotonic()
        for conn in list(live["slow"]):
            if conn.state == "open" and conn.next_send <= now:
                try:
                    conn.sock.send(payload[conn.sent % len(payload):][:1])
                    conn.sent += 1
                    conn.next_send += args.slow_interval
                except BlockingIOError:
                    conn.next_send = now + args.slow_interval
                except OSError:
                    closed(conn, now, reset=True)
        if now >= next_status:
            # Handshakes not done in 5 s are given up and counted.
            for kind in want:
                for conn in [c for c in live[kind] if c.state in ("connecting", "handshaking")]:
                    if now - conn.began > 5:
                        fail(conn, 0, now)
            write_status(now)
            next_status = now + 0.5


# ------------------------------------------------------------ part 1: tcp


def proc_status(pid, field):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def established_on(port):
    """Server-side ESTABLISHED TCP sockets on local `port` (accepted or queued)."""
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def nofile_limit(pid):
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


def read_status(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class Sampler(threading.Thread):
    """Every 0.5 s: both kubewires' VmRSS and fds, the kernel's ESTABLISHED
    count on the attacked port, and the attacker's open connections."""

    def __init__(self, pids, status_path, port):
        super().__init__(daemon=True)
        self.pids, self.status_path, self.port = pids, status_path, port
        self.phase, self.rows, self.done = "before", [], threading.Event()

    def sample(self):
        status = read_status(self.status_path)
        opened = (status or {}).get("open", {})
        row = {"phase": self.phase, "t": time.time(),
               "est": established_on(self.port),
               "idle": opened.get("idle", 0) if status else "-",
               "slow": opened.get("slow", 0) if status else "-"}
        for name, pid in self.pids.items():
            row[f"rss_{name}"] = proc_status(pid, "VmRSS")
            row[f"fds_{name}"] = fd_count(pid)
        self.rows.append(row)
        return row

    def run(self):
        while not self.done.wait(0.5):
            self.sample()


def part_tcp(args, release, bench, work, tls=False):
    extra = {name: () for name in ("quiet", "attacked")}
    attacked_port = TCP_PORTS["attacked"]
    if tls:
        print("\n# 1b. Idle DNS-over-TLS connections and slow handshakes under UDP load\n", flush=True)
        crt, key = self_signed_cert(work)
        for name in extra:
            extra[name] = ("--tls-listen", f"127.0.0.1:{TLS_PORTS[name]}", "--tls-cert-file", crt,
                           "--tls-key-file", key)
        attacked_port = TLS_PORTS["attacked"]
        # Idle TLS connections are held for the whole run (not closed and
        # opened again after 10 s, which would turn them into handshakes).
        idle_ms = 600_000
    else:
        print("\n# 1. Idle TCP and slowloris clients under UDP load\n", flush=True)
        idle_ms = None
    config = work / "kubewire-tcp.toml"
    config.write_text(f"[tcp]\nmax_connections = {MAX_CONNECTIONS}\n"
                      + (f"idle_timeout_ms = {idle_ms}\n" if idle_ms else ""))
    run([str(release / "kubewire"), "config", "check", str(config)], stdout=subprocess.DEVNULL)
    printed = subprocess.run([str(release / "kubewire"), "--config", str(config), "config", "print"],
                             capture_output=True, text=True, check=True).stdout
    tcp_section = printed.split("[tcp]", 1)[1].split("\n[", 1)[0]
    settings = dict(re.findall(r"^(\w+) = (\S+)$", tcp_section, re.M))
    print(f"Both kubewires: --config {config.name} ([tcp] max_connections = {MAX_CONNECTIONS}; "
          f"the default is 1024 per core, which would close the 1025th connection at once). "
          f"Effective: tcp.max_connections = {settings.get('max_connections')}, "
          f"tcp.idle_timeout_ms = {settings.get('idle_timeout_ms')} (default).")
    need = args.idle + args.slow + 256
    have = raise_nofile(need)
    procs = {}
    status_path = work / "attacker.json"
    sampler = None
    try:
        procs["null"] = start("null", "0", [str(release / "kubewire-null-responder"),
                              f"127.0.0.1:{TCP_PORTS['null']}", "0"], work)
        for name in ("quiet", "attacked"):
            procs[name] = kubewire(release, work, name, TCP_PORTS[name], TCP_METRICS[name], config,
                                   extra[name])
        wait_up(procs, TCP_PORTS, work, answers_ready_name)
        for name in ("quiet", "attacked"):
            limit = nofile_limit(procs[name].pid)
            print(f"{name}: pid {procs[name].pid}, RLIMIT_NOFILE {limit}"
                  + ("" if limit >= need else f" (below the {need} needed!)"))
        if have < need:
            sys.exit(f"RLIMIT_NOFILE is {have}; {need} are needed (run as root or raise the hard limit)")
        time.sleep(1)
        pids = {name: procs[name].pid for name in ("quiet", "attacked")}
        sampler = Sampler(pids, status_path, attacked_port)
        before = sampler.sample()

        attack_cmd = [sys.executable, str(Path(__file__).resolve()), "--attack",
                      f"127.0.0.1:{attacked_port}", "--idle", str(args.idle),
                      "--slow", str(args.slow), "--slow-interval", str(args.slow_interval),
                      "--status", str(status_path)] + (["--tls"] if tls else [])
        print(f"$ taskset -c 1 {' '.join(attack_cmd[1:])}", flush=True)
        sampler.phase = "opening"
        sampler.start()
        procs["attacker"] = start("attacker", "1", attack_cmd, work)
        deadline = time.time() + 30
        while True:
            status = read_status(status_path) or {}
            opened = status.get("open", {})
            if opened.get("idle", 0) >= args.idle and opened.get("slow", 0) >= args.slow * 0.8:
                break
            if procs["attacker"].poll() is not None:
                sys.exit(f"the attacker exited; see {work / 'attacker.log'}")
            if time.time() > deadline:
                print(f"warning: after 30 s the attacker holds {opened} of "
                      f"{args.idle} idle and {args.slow} slow; going on", flush=True)
                break
            time.sleep(0.2)
        opened_at = time.time()
        at_open = sampler.sample()
        print(f"Attack open after {status.get('elapsed', 0):.1f} s: {opened.get('idle', 0)} idle, "
              f"{opened.get('slow', 0)} slow connections.", flush=True)

        part = "tls" if tls else "tcp"
        out_dir = Path(args.out_dir) / part if args.out_dir else work / f"compare-{part}"
        cmd = [bench, "compare", "--queries", str(work / "scenario" / "queries.txt"),
               "--rate", str(args.rate), "--seconds", str(args.seconds), "--rounds", str(args.rounds),
               "--cpus", "1", "--out-dir", str(out_dir)]
        for name, port in TCP_PORTS.items():
            cmd += ["--target", f"{name}=127.0.0.1:{port}@{procs[name].pid}"]
        print("\n$", " ".join(cmd), flush=True)
        sampler.phase = "compare"
        run(cmd)
        sampler.phase = "end"
        at_end = sampler.sample()
        final = read_status(status_path) or {}
        attack_seconds = time.time() - opened_at
        if procs["attacker"].poll() is not None:
            print(f"warning: the attacker exited during the run; see {work / 'attacker.log'}")
        os.killpg(procs["attacker"].pid, signal.SIGKILL)
        procs.pop("attacker").wait()
        status_path.unlink(missing_ok=True)
        sampler.phase = "after"
        time.sleep(2)
        after = sampler.sample()
        sampler.done.set()

        # Latency, from the JSON reports.
        print("\n| target | QPS (median) | lost (all rounds) | p50 µs (median of rounds) "
              "| p99 µs (median of rounds) | CPU µs/query (median) | RCODEs (all rounds) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name in TCP_PORTS:
            runs = reports(out_dir, name)
            rcodes = Counter()
            for data in runs:
                rcodes.update(data.get("rcodes") or {})
            codes = ", ".join(f"{k} {v}" for k, v in sorted(rcodes.items()))
            lat = [data.get("latency_us") or {} for data in runs]
            print(f"| {name} | {median([d['answered_qps'] for d in runs]):.0f} "
                  f"| {sum(d['lost'] for d in runs)} | {median([l.get('p50', 0) for l in lat])} "
                  f"| {median([l.get('p99', 0) for l in lat])} "
                  f"| {median([d.get('server_cpu_us_per_query') or 0 for d in runs]):.3f} | {codes} |")

        # Memory and connections, before, during and after.
        during = [row for row in sampler.rows if row["phase"] == "compare"]
        print("\n| moment | quiet VmRSS MiB | attacked VmRSS MiB | quiet fds | attacked fds "
              f"| ESTABLISHED on :{attacked_port} | attacker's idle open | attacker's slow open |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")

        def row(label, r):
            print(f"| {label} | {r['rss_quiet']:.1f} | {r['rss_attacked']:.1f} | {r['fds_quiet']} "
                  f"| {r['fds_attacked']} | {r['est']} | {r['idle']} | {r['slow']} |")

        row("before the attack (servers up, no load yet)", before)
        row("attack open, before the UDP load", at_open)
        if during:
            def over(pick):
                out = {}
                for key in during[0]:
                    values = [r[key] for r in during if isinstance(r[key], (int, float))]
                    out[key] = pick(values) if values else "-"
                return out

            peak, low = over(max), over(min)
            row(f"during the UDP rounds: max of {len(during)} samples", peak)
            row("during the UDP rounds: min", low)
            print(f"| during the UDP rounds: median | {median([r['rss_quiet'] for r in during]):.1f} "
                  f"| {median([r['rss_attacked'] for r in during]):.1f} "
                  f"| {median([r['fds_quiet'] for r in during])} "
                  f"| {median([r['fds_attacked'] for r in during])} "
                  f"| {median([r['est'] for r in during])} "
                  f"| {median([r['idle'] for r in during if r['idle'] != '-'])} "
                  f"| {median([r['slow'] for r in during if r['slow'] != '-'])} |")
        row("end of the UDP rounds (attack still on)", at_end)
        row("2 s after the attacker is killed (its sockets closed)", after)
        print(f"\nVmHWM at the end: quiet {proc_status(pids['quiet'], 'VmHWM'):.1f} MiB, "
              f"attacked {proc_status(pids['attacked'], 'VmHWM'):.1f} MiB. The attack lasted "
              f"{attack_seconds:.0f} s.")

        # The attacker's view of kubewire's closes.
        opened = final.get("open", {})
        print(f"\nAttack connections open at the end (the attacker's count): "
              f"{opened.get('idle', 0)} of {args.idle} idle, {opened.get('slow', 0)} of "
              f"{args.slow} slow ({final.get('connecting', 0)} handshakes in progress).\n")
        print("| client | connects | established | closed by kubewire (FIN) "
              "| reset (RST) "
              "| closed at once (< 0.5 s, nothing sent) | lifetime s: min / median / max "
              "| bytes sent when closed: min / median / max | replies | connect failures |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        def dash(value):
            return "-" if value is None else str(value)

        for kind in ("idle", "slow"):
            s = final.get(kind) or {}
            life = s.get("lifetime_s") or {}
            sent = s.get("sent_at_close") or {}
            fails = ", ".join(f"{k} {v}" for k, v in (s.get("connect_failures") or {}).items())
            print(f"| {kind} | {s.get('connects', 0)} | {s.get('established', 0)} "
                  f"| {s.get('server_closes', 0)} | {s.get('resets', 0)} "
                  f"| {s.get('closed_at_once', 0)} "
                  f"| {' / '.join(dash(life.get(p)) for p in ('p0', 'p50', 'p100'))} "
                  f"| {' / '.join(dash(sent.get(p)) for p in ('p0', 'p50', 'p100'))} "
                  f"| {s.get('replies', 0)} | {fails or 'none'} |")
        if tls:
            print(f"\nExpected of kubewire: idle TLS connections held for the run "
                  f"(tcp.idle_timeout_ms = {idle_ms}); a slow handshake (a ClientHello sent one "
                  f"byte per {args.slow_interval:g} s) closed after tls.handshake_timeout_ms (5 s), "
                  f"and counted in kubewire_tls_handshakes_total{{outcome=\"timed_out\"}}.")
        else:
            print(f"\nExpected of kubewire: an idle connection closed after tcp.idle_timeout_ms "
                  f"({int(settings.get('idle_timeout_ms', '10000')) / 1000:g} s); a slowloris "
                  f"client closed 2 s after its length prefix is complete (the body timeout), so "
                  f"after {args.slow_interval + 2:g}-{2 * args.slow_interval + 2:g} s and 3-4 bytes "
                  f"(its first byte comes at a random point of its first interval); none closed at "
                  f"once while under max_connections; after the attacker is gone, fds back to "
                  f"what they were before. A reset is a slowloris byte that crossed kubewire's "
                  f"close.")
        for name in ("quiet", "attacked"):
            problems = log_problems(work / f"{name}.log")
            print(f"\n{name}'s log: {len(problems)} WARN/ERROR lines"
                  + ("." if not problems else ":\n" + "\n".join(f"    {p}" for p in problems[:10])))
    finally:
        if sampler:
            sampler.done.set()
        stop(procs)


# ------------------------------------------------------- part 2: nxdomain


def part_nxdomain(args, release, bench, work):
    print("\n# 2. NXDOMAIN flood against A hits\n", flush=True)
    procs = {}
    try:
        procs["null"] = start("null", "0", [str(release / "kubewire-null-responder"),
                              f"127.0.0.1:{NX_PORTS['null']}", "0"], work)
        procs["kubewire"] = kubewire(release, work, "kubewire", NX_PORTS["kubewire"], NX_METRICS)
        wait_up(procs, NX_PORTS, work, answers_ready_name)

        # (a) The scenario's A lines whose name has an A record.
        lines = [line for line in (work / "scenario" / "queries.txt").read_text().splitlines()
                 if len(line.split()) == 2 and line.split()[1] == "A"]
        asker = Asker(NX_PORTS["kubewire"])
        answers = {}
        for name in sorted({line.split()[0] for line in lines}):
            answers[name] = asker.ask(name)
        hits = {name for name, got in answers.items() if got and got[0] == 0 and got[1] > 0}
        a_lines = [line for line in lines if line.split()[0] in hits]
        a_file = work / "a-hits.txt"
        a_file.write_text("\n".join(a_lines) + "\n")
        others = Counter(("no reply" if not got else f"rcode {got[0]}, {got[1]} answers")
                         for name, got in answers.items() if name not in hits)
        records = Counter(answers[line.split()[0]][1] for line in a_lines)
        print(f"A file: {len(a_lines)} of the scenario's {len(lines)} A lines "
              f"({len(hits)} distinct names with an A record; left out: "
              f"{', '.join(f'{v} {k}' for k, v in others.items()) or 'none'}). "
              f"A records per answer, by lines: "
              f"{', '.join(f'{n}: {c}' for n, c in sorted(records.items()))} "
              f"(more than one: headless services).")

        # (b) Unique random names in the scenario's namespaces: NXDOMAIN.
        manifests = json.loads((work / "scenario" / "manifests.json").read_text())
        namespaces = sorted({item["metadata"]["name"] for item in manifests["items"]
                             if item["kind"] == "Namespace"})
        rng = random.Random(3)
        nx_names = [f"r{rng.getrandbits(48):012x}.{rng.choice(namespaces)}.svc.cluster.local"
                    for _ in range(len(a_lines))]
        nx_file = work / "nxdomain.txt"
        nx_file.write_text("".join(f"{name} A\n" for name in nx_names))
        checked = Counter()
        for name in rng.sample(nx_names, min(NX_CHECKED, len(nx_names))):
            got = asker.ask(name)
            checked["no reply" if not got else f"rcode {got[0]}, {got[1]} answers"] += 1
        asker.close()
        print(f"NX file: {len(nx_names)} unique names r<hex>.<ns>.svc.cluster.local A over the "
              f"namespaces {', '.join(namespaces)}; a sample of {sum(checked.values())} asked: "
              f"{', '.join(f'{v} {k}' for k, v in checked.items())}.")
        if set(checked) != {"rcode 3, 0 answers"}:
            sys.exit("the NX names are not all NXDOMAIN (RCODE 3 with no answer)")

        base = Path(args.out_dir) / "nxdomain" if args.out_dir else work / "compare-nx"
        files = {"A": a_file, "NX": nx_file}
        results = {kind: [] for kind in files}
        for round_ in range(1, args.rounds + 1):
            for kind, path in files.items():
                out_dir = base / f"{kind}-{round_}"
                cmd = [bench, "compare", "--queries", str(path), "--rate", str(args.nx_rate),
                       "--seconds", str(args.seconds), "--rounds", "1", "--cpus", "1",
                       "--out-dir", str(out_dir)]
                for name, port in NX_PORTS.items():
                    cmd += ["--target", f"{name}=127.0.0.1:{port}@{procs[name].pid}"]
                print(f"\n$ {' '.join(cmd)}   # {kind}, round {round_} of {args.rounds}", flush=True)
                # compare's own tables go to a file; its round lines are shown.
                base.mkdir(parents=True, exist_ok=True)
                with open(base / f"{kind}-{round_}.md", "w") as table:
                    run(cmd, stdout=table)
                results[kind].append({name: reports(out_dir, name)[0] for name in NX_PORTS})

        def cpu(data):
            return data.get("server_cpu_us_per_query") or float("nan")

        print(f"\n## {args.nx_rate} qps offered, {args.rounds} rounds of {args.seconds} s per file, "
              "A and NX interleaved\n")
        print("| file | kubewire QPS | lost (all rounds) | p50 µs | p99 µs | kubewire CPU µs/query "
              "| null CPU µs/query | kubewire ÷ null | RCODEs (all rounds) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for kind, rounds in results.items():
            kw = [r["kubewire"] for r in rounds]
            rcodes = Counter()
            for data in kw:
                rcodes.update(data.get("rcodes") or {})
            print(f"| {kind} | {median([d['answered_qps'] for d in kw]):.0f} "
                  f"| {sum(d['lost'] for d in kw)} "
                  f"| {median([d['latency_us'].get('p50', 0) for d in kw])} "
                  f"| {median([d['latency_us'].get('p99', 0) for d in kw])} "
                  f"| {median([cpu(d) for d in kw]):.3f} "
                  f"| {median([cpu(r['null']) for r in rounds]):.3f} "
                  f"| {median([cpu(r['kubewire']) / cpu(r['null']) for r in rounds]):.3f} "
                  f"| {', '.join(f'{k} {v}' for k, v in sorted(rcodes.items()))} |")
        ratio = median([cpu(nx["kubewire"]) / cpu(a["kubewire"])
                        for a, nx in zip(results["A"], results["NX"])])
        floor_ratio = median([(cpu(nx["kubewire"]) / cpu(nx["null"]))
                              / (cpu(a["kubewire"]) / cpu(a["null"]))
                              for a, nx in zip(results["A"], results["NX"])])
        verdict = ("met" if abs(ratio - 1) <= 0.10 else
                   "not met: an NXDOMAIN costs less than an A hit" if ratio < 1 else
                   "NOT met: an NXDOMAIN costs more than an A hit")
        print(f"\nNX ÷ A, kubewire's CPU per query (median over rounds of the ratio within a round): "
              f"{ratio:.3f}; of the ratios to the floor: {floor_ratio:.3f}. Goal: within 10% "
              f"({verdict}).")
        problems = log_problems(work / "kubewire.log")
        print(f"kubewire's log: {len(problems)} WARN/ERROR lines"
              + ("." if not problems else ":\n" + "\n".join(f"    {p}" for p in problems[:10])))
    finally:
        stop(procs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("tcp", "tls", "nxdomain", "all"), default="all")
    ap.add_argument("--rate", type=int, default=20000, help="part 1's offered UDP qps")
    ap.add_argument("--nx-rate", type=int, default=50000, help="part 2's offered qps")
    ap.add_argument("--seconds", type=int, default=5, help="seconds per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=int, default=2000, help="part 1's idle TCP connections")
    ap.add_argument("--slow", type=int, default=50, help="part 1's slowloris clients")
    ap.add_argument("--slow-interval", type=float, default=1.0,
                    help="seconds between a slowloris client's bytes")
    ap.add_argument("--out-dir", default="", help="compare's reports (default: the work directory)")
    ap.add_argument("--no-build", action="store_true")
    # The attacker: this script run again as a process of its own.
    ap.add_argument("--attack", default="", help=argparse.SUPPRESS)
    ap.add_argument("--status", default="", help=argparse.SUPPRESS)
    ap.add_argument("--tls", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.attack:
        attack(args)
        return
    release = ROOT / "target" / "release"
    if not args.no_build:
        run(["cargo", "build", "--release", "-p", "kubewire", "-p", "kubewire-bench"], cwd=ROOT)
    work = Path(tempfile.mkdtemp(prefix="kubewire-faults-bench-"))
    print(f"work directory: {work}")
    bench = str(release / "kubewire-bench")
    run([bench, "scenario", *SCENARIO, "--out-dir", str(work / "scenario")], stdout=subprocess.DEVNULL)
    if args.part in ("tcp", "all"):
        part_tcp(args, release, bench, work)
    if args.part in ("tls", "all"):
        part_tcp(args, release, bench, work, tls=True)
    if args.part in ("nxdomain", "all"):
        part_nxdomain(args, release, bench, work)


if __name__ == "__main__":
    main()
