"""Helpers the benchmark scripts share: starting, checking and stopping the
servers under test (pinned to a CPU, each in its own process group), their
CPU time and memory from /proc, DNS probes (UDP, DoT, DoH), a self-signed
certificate, dnsperf and h2load, and the real API and CoreDNS from
bench/peers/build.sh.

Import it from a script in bench/: `from benchlib import Server, ...`.
"""

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
TICKS = os.sysconf("SC_CLK_TCK")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_debian(packages):
    """apt-get installs each (binary, package) pair whose binary is missing."""
    missing = [p for b, p in packages if not shutil.which(b)]
    if missing:
        run(["apt-get", "update", "-qq"])
        run(["apt-get", "install", "-y", "-qq", *missing], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def ensure_sbin_tools(tools):
    """apt-get installs each tool (its package has its name) that is neither on PATH nor in /usr/sbin."""
    ensure_debian([(tool, tool) for tool in tools if not Path(f"/usr/sbin/{tool}").exists()])


def start(name, cpu, argv, work):
    """Starts argv pinned to `cpu` (taskset; None: not pinned) in its own process group,
    logging to WORK/NAME.log."""
    log = open(Path(work) / f"{name}.log", "w")
    pinned = ["taskset", "-c", cpu] if cpu is not None else []
    return subprocess.Popen([*pinned, *argv], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(procs):
    """Kills every process group in the dict `procs` (name: Popen) and empties it."""
    for proc in procs.values():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for proc in procs.values():
        proc.wait()
    procs.clear()


def wait_up(procs, ports, work, ready, timeout=15):
    """Waits until `ready(port)` holds for every server in `ports` (name: port), or exits
    naming the server that died or did not answer, and its log."""
    deadline = time.time() + timeout
    pending = dict(ports)
    while pending:
        for server, port in list(pending.items()):
            if procs[server].poll() is not None:
                sys.exit(f"{server} exited at start; see {Path(work) / (server + '.log')}")
            if ready(port):
                del pending[server]
        if pending and time.time() > deadline:
            sys.exit(f"no answer from {', '.join(pending)}; see the logs in {work}")
        time.sleep(0.2)


def build_release():
    run(["cargo", "build", "--release", "-q", "-p", "kubewire", "-p", "kubewire-bench"], cwd=ROOT)


def peers_bin(name):
    """A peer built by bench/peers/build.sh (built first if missing)."""
    base = Path(os.environ.get("KUBEWIRE_PEERS_DIR", Path.home() / ".cache" / "kubewire-peers")) / "bin"
    if not (base / name).exists():
        run([str(ROOT / "bench" / "peers" / "build.sh"), name])
    return str(base / name)


def group_cpu_seconds(pgid):
    """User + system CPU seconds of every process in a process group."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:  # field 5: pgrp
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICKS


def rss_kib(pid):
    """VmRSS of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query_bytes(name, qtype=1, qid=0xABCD, edns=0):
    """A query (RD set); with `edns`, an OPT record advertising that UDP payload size."""
    wire = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"
    opt = b"\0" + struct.pack(">HHIH", 41, edns, 0, 0) if edns else b""
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1 if edns else 0) + wire + struct.pack(">HH", qtype, 1) + opt


def ask(port, name, qtype=1, timeout=0.3):
    """(rcode, answer count) of a UDP query to 127.0.0.1:port, or None."""
    query = query_bytes(name, qtype)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(query, ("127.0.0.1", port))
        data, _ = s.recvfrom(65535)
        if data[:2] != query[:2]:
            return None
        return data[3] & 0x0F, struct.unpack(">H", data[6:8])[0]
    except OSError:
        return None
    finally:
        s.close()


def parse_reply(query, data):
    """(rcode, answer count) of a reply to `query`, or None if it is not one."""
    if len(data) < 12 or data[:2] != query[:2] or not data[2] & 0x80:
        return None
    return data[3] & 0x0F, struct.unpack(">H", data[6:8])[0]


def tls_client_context(alpn=None):
    """A TLS client context that does not verify the server (benchmark certificates are self-signed)."""
    import ssl
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def _recv_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def ask_dot(port, name, qtype=1, timeout=1.0, alpn=("dot",)):
    """(rcode, answer count) of a DNS-over-TLS query to 127.0.0.1:port (one connection), or None."""
    query = query_bytes(name, qtype)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            with tls_client_context(list(alpn)).wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(struct.pack(">H", len(query)) + query)
                size = struct.unpack(">H", _recv_exact(s, 2))[0]
                return parse_reply(query, _recv_exact(s, size))
    except (OSError, ValueError):
        return None


def ask_doh(port, name, qtype=1, timeout=1.0, path="/dns-query"):
    """(rcode, answer count) of a DNS-over-HTTPS GET (HTTP/1.1) to 127.0.0.1:port, or None."""
    import base64
    import http.client
    query = query_bytes(name, qtype, qid=0)  # RFC 8484 §4.1: ID 0 for GET
    param = base64.urlsafe_b64encode(query).rstrip(b"=").decode()
    try:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout,
                                           context=tls_client_context(["http/1.1"]))
        conn.request("GET", f"{path}?dns={param}", headers={"Accept": "application/dns-message"})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return parse_reply(query, data) if response.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None


def self_signed_cert(work, key_type="ec"):
    """A fresh self-signed certificate for localhost and 127.0.0.1 (`key_type`: ec, P-256, or rsa,
    2048 bits), written as WORK/tls.crt and WORK/tls.key (PKCS #8); returns their paths."""
    crt, key = Path(work) / "tls.crt", Path(work) / "tls.key"
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if key_type == "ec" else \
        ["-newkey", "rsa:2048"]
    run(["openssl", "req", "-x509", *newkey, "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)],
        capture_output=True)
    return str(crt), str(key)


def answered(port, name="kubernetes.default.svc.cluster.local"):
    return ask(port, name) is not None


def http_status(port, path):
    import http.client
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return 0


class Server:
    """A server under test, pinned with taskset, in its own process group,
    logging to WORK/NAME.log. `ready` is a function of the server that says
    it is up (by default: it answers a DNS query on its port)."""

    def __init__(self, name, port, argv, work, cpus="0", env=None, ready=None):
        self.name, self.port, self.argv, self.work, self.cpus = name, port, argv, Path(work), cpus
        self.env = env
        self.ready = ready or (lambda server: answered(server.port))
        self.proc = None
        self.started = None

    def start(self, timeout=30):
        """Starts it and waits until it is ready; returns the seconds that took."""
        log = open(self.work / f"{self.name}.log", "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(["taskset", "-c", self.cpus, *self.argv], stdout=log, stderr=log,
                                     start_new_session=True, env={**os.environ, **(self.env or {})})
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; its log:\n{self.log_tail()}")
            if self.ready(self):
                return time.monotonic() - self.started
            time.sleep(0.01)
        raise RuntimeError(f"{self.name} not ready on {self.port} after {timeout} s; its log:\n{self.log_tail()}")

    def log_tail(self, lines=20):
        text = (self.work / f"{self.name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self):
        return group_cpu_seconds(self.proc.pid)

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def grab_from(text, pattern, cast):
    """The first group of `pattern` in a tool's output, cast; None when absent."""
    m = re.search(pattern, text)
    return cast(m.group(1)) if m else None


def dnsperf(port, queries, seconds, rate, cpu="1", mode="udp", clients=16, outstanding=1000, extra=(),
            verbose=False):
    """dnsperf's figures for one run against 127.0.0.1:port (`mode`: udp, tcp, dot or doh; `extra`:
    more arguments, such as `-O doh-uri=...`). With `verbose`, dnsperf reports every answer's
    latency (`-v`) and the result holds them too, sorted, in ms (`latencies_ms`)."""
    cmd = ["taskset", "-c", cpu, "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
           "-l", str(seconds), "-c", str(clients), "-q", str(outstanding)]
    if mode != "udp":
        cmd += ["-m", mode]
    if rate:
        cmd += ["-Q", str(rate)]
    cmd += [*extra, *(["-v"] if verbose else [])]
    done = subprocess.run(cmd, capture_output=True, text=True)
    out = done.stdout

    def grab(pattern, cast=float):
        return grab_from(out, pattern, cast)

    result = {
        "sent": grab(r"Queries sent:\s+(\d+)", int),
        "completed": grab(r"Queries completed:\s+(\d+)", int),
        "lost": grab(r"Queries lost:\s+(\d+)", int),
        "qps": grab(r"Queries per second:\s+([\d.]+)"),
        "avg_ms": (grab(r"Average Latency \(s\):\s+([\d.]+)") or 0) * 1000,
        "max_ms": (grab(r"Average Latency \(s\):.*max ([\d.]+)") or 0) * 1000,
        "sd_ms": (grab(r"Latency StdDev \(s\):\s+([\d.]+)") or 0) * 1000,
        "rcodes": grab(r"Response codes:\s+(.*)", str) or "",
        "reconnections": grab(r"Reconnections:\s+(\d+)", int),
        "stderr": done.stderr.strip(),
        "command": cmd,
    }
    if verbose:
        latencies = []
        for line in out.splitlines():
            fields = line.split()
            # "> NOERROR name type 0.000123"; a timeout is "> T name type".
            if len(fields) >= 3 and fields[0] == ">" and fields[1] not in ("T", "I"):
                try:
                    latencies.append(float(fields[-1]) * 1000)
                except ValueError:
                    pass
        result["latencies_ms"] = sorted(latencies)
    return result


def h2load(uris, seconds, rate, cpu="1", streams=100, requests=None, extra=(), log_file=None):
    """h2load's figures for one HTTP/2 connection (-c 1) over the URIs in the file `uris`, used in
    order and again: for `seconds` at `rate` requests per second (--rps; 0: as fast as it goes), or
    `requests` in all. With `log_file`, every request's time to the end of its response, sorted, in
    ms (`latencies_ms`), from h2load's --log-file."""
    cmd = ["taskset", "-c", cpu, "h2load", "-i", str(uris), "-c", "1", "-t", "1", "-m", str(streams),
           "-H", "accept: application/dns-message", *extra]
    cmd += ["-n", str(requests)] if requests else ["-D", str(seconds)]
    if rate:
        cmd += ["--rps", str(rate)]
    if log_file:
        cmd += ["--log-file", str(log_file)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    out = done.stdout

    def grab(pattern, cast=int):
        return grab_from(out, pattern, cast)

    result = {
        "sent": grab(r"requests: \d+ total, (\d+) started"),
        "completed": grab(r"(\d+) succeeded"),
        "failed": grab(r"(\d+) failed"),
        "errored": grab(r"(\d+) errored"),
        "timeout": grab(r"(\d+) timeout"),
        "status": grab(r"status codes: (.*)", str) or "",
        "alpn": grab(r"Application protocol: (\S+)", str),
        "elapsed_s": grab(r"finished in ([\d.]+)s", float),
        "stderr": done.stderr.strip() + ("" if done.returncode == 0 else f" (exit {done.returncode})"),
        "command": cmd,
    }
    result["lost"] = (result["sent"] or 0) - (result["completed"] or 0)
    result["qps"] = result["completed"] / result["elapsed_s"] if result["completed"] and result["elapsed_s"] else 0
    if log_file:
        latencies, starts = [], []
        for line in Path(log_file).read_text().splitlines():
            fields = line.split("\t")
            if len(fields) >= 3 and fields[1].startswith("2"):
                latencies.append(int(fields[2]) / 1000)
                starts.append(int(fields[0]))
        result["latencies_ms"] = sorted(latencies)
        # How h2load released the requests: bursts are starts less than 200 µs apart.
        starts.sort()
        result["bursts"] = 1 + sum(1 for a, b in zip(starts, starts[1:]) if b - a >= 200) if starts else 0
    return result


def percentile(values, p):
    """The nearest-rank p-quantile (p in 0..1) of `values`, or None if there are none."""
    values = sorted(values)
    return values[round((len(values) - 1) * p)] if values else None


def bench_compare(servers, queries, seconds, rounds, rate, out_dir, load_cpu="1"):
    """`kubewire-bench compare` over `servers` (interleaved rounds): its
    markdown tables, with per-target CPU per query, percentiles and losses."""
    targets = []
    for s in servers:
        targets += ["--target", f"{s.name}=127.0.0.1:{s.port}@{s.proc.pid}"]
    cmd = ["taskset", "-c", load_cpu, str(RELEASE / "kubewire-bench"), "compare",
           *targets, "--queries", str(queries), "--rate", str(rate), "--seconds", str(seconds),
           "--rounds", str(rounds), "--cpus", load_cpu, "--out-dir", str(out_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(done.stderr)
    return done.stdout


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return "unknown"


class RealApi:
    """`kubewire-bench real-api`: etcd and kube-apiserver with a synthetic
    cluster (`svc-N` in `ns-(N % 100)`, one in five headless, each with one
    slice; Running pods), until stop(). Its url, token and CA, for writes."""

    def __init__(self, work, services, endpoints, pods):
        self.work = Path(work)
        self.args = ["--services", str(services), "--endpoints", str(endpoints), "--pods", str(pods)]
        self.proc = None
        self.info = {}

    def start(self, timeout=1200):
        self.work.mkdir(parents=True, exist_ok=True)
        log = open(self.work / "real-api.log", "w")
        self.proc = subprocess.Popen([str(RELEASE / "kubewire-bench"), "real-api", *self.args, "--out-dir",
                                      str(self.work)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                     text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:
            line = line.strip()
            print(f"  real-api: {line}", flush=True)
            if "=" in line:
                key, value = line.split("=", 1)
                self.info[key] = value
            if line == "ready":
                return self
            if time.monotonic() > deadline:
                break
        raise RuntimeError(f"the real API did not come up; see {self.work}/real-api.log")

    def request(self, method, path, body=None, content_type="application/merge-patch+json"):
        import http.client
        import json
        import ssl
        context = ssl.create_default_context(cafile=self.info["ca"])
        host = self.info["url"].removeprefix("https://")
        conn = http.client.HTTPSConnection(host, context=context, timeout=10)
        headers = {"Authorization": f"Bearer {self.info['token']}", "Content-Type": content_type}
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}: {data[:300]!r}")
        return json.loads(data) if data else None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
