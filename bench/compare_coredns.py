#!/usr/bin/env python3
"""CoreDNS beside kubewire in the cluster-DNS role, on one real API.

Both servers follow the same real kube-apiserver (etcd behind it; both built
by bench/peers/build.sh with CoreDNS), which holds a synthetic cluster:
`svc-N` in `ns-(N % 100)`, one in five headless, each with one
EndpointSlice, and Running pods (`kubewire-bench real-api`).

- CoreDNS runs the kubeadm Corefile: `kubernetes` (pods insecure,
  fallthrough for the reverse zones, ttl 30), `cache 30` without cluster
  names, `forward` to a local scripted upstream (the null responder, never
  the host's resolver), `loop`, `loadbalance`, `prometheus`, `health` and
  `ready`. kubewire runs its equivalent flags.
- Parts (`--parts`):
  - `serve`: CPU per query at fixed offered loads and closed loop, p50/p99
    and losses, with the null responder as the floor: `kubewire-bench
    compare`, interleaved rounds. Each server on CPU 0 (CoreDNS with
    GOMAXPROCS=1), the load on CPU 1.
  - `sync`: start to ready (/ready answers 200) and RSS after the sync of
    a large cluster, pods `verified` on both, in alternating rounds.
  - `propagation`: an EndpointSlice's endpoint flips at the API server;
    both servers are polled until they answer the new set: p50 and p99.
  - `dnstap`: each server with and without dnstap to a golang-dnstap
    collector, at `--dnstap-load` qps (not a default part).

Usage:
  python3 bench/compare_coredns.py [--parts serve,sync,propagation,dnstap] [--rounds 5] [--seconds 8]
      [--loads 20000,50000,0] [--dnstap-load 10000] [--out bench/results/coredns.md]
"""

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from benchlib import (RELEASE, ROOT, RealApi, Server, ask, bench_compare, build_release, cpu_model,
                      ensure_debian, free_port, git_commit, http_status, peers_bin, start, stop)

SERVER_CPU = "0"
LOAD_CPU = "1"
NAMESPACES = 100

COREFILE = """.:{port} {{
    errors
    health 127.0.0.1:{health} {{
        lameduck 5s
    }}
    ready 127.0.0.1:{ready}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods {pods}
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    prometheus 127.0.0.1:{metrics}
    forward . 127.0.0.1:{upstream} {{
        max_concurrent 1000
    }}
    cache 30 {{
        disable success cluster.local
        disable denial cluster.local
    }}
    loop
    loadbalance{extra}
}}
"""


def query_file(path, services, count=100_000, seed=1):
    """The usual mix over the synthetic cluster: A hits, AAAA NODATA, SRV,
    NXDOMAIN, and ndots:5 search-path misses."""
    import random
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        s = rng.randrange(services)
        name = f"svc-{s}.ns-{s % NAMESPACES}.svc.cluster.local"
        roll = rng.random()
        if roll < 0.5:
            lines.append(f"{name} A")
        elif roll < 0.6:
            lines.append(f"{name} AAAA")
        elif roll < 0.7:
            lines.append(f"_http._tcp.{name} SRV")
        elif roll < 0.8:
            lines.append(f"nope-{s}.ns-{s % NAMESPACES}.svc.cluster.local A")
        else:
            lines.append(f"{name}.ns-{rng.randrange(NAMESPACES)}.svc.cluster.local A")
    Path(path).write_text("\n".join(lines) + "\n")


def coredns(work, name, kubeconfig, upstream, pods="insecure", cpus=SERVER_CPU, procs=1, extra=""):
    """CoreDNS with the kubeadm Corefile; `extra` directives go at its end."""
    port, health, ready, metrics = free_port(), free_port(), free_port(), free_port()
    corefile = Path(work) / f"{name}.Corefile"
    corefile.write_text(COREFILE.format(port=port, health=health, ready=ready, kubeconfig=kubeconfig, pods=pods,
                                        metrics=metrics, upstream=upstream,
                                        extra="".join(f"\n    {line}" for line in extra.splitlines())))
    server = Server(name, port, [peers_bin("coredns"), "-conf", str(corefile)], work, cpus=cpus,
                    env={"GOMAXPROCS": str(procs)}, ready=lambda s: http_status(ready, "/ready") == 200)
    return server


def kubewire(work, name, kubeconfig, upstream, pods="insecure", cpus=SERVER_CPU, extra=()):
    port, ready = free_port(), free_port()
    argv = [str(RELEASE / "kubewire"), "--kubeconfig", kubeconfig, "--listen", f"127.0.0.1:{port}",
            "--cores", cpus if "-" in cpus or "," in cpus else f"{cpus}-{cpus}", "--forward", f"127.0.0.1:{upstream}",
            "--ttl", "30", "--pods", pods, "--log-level", "warn", "--health-addr", "127.0.0.1:0",
            "--ready-addr", f"127.0.0.1:{ready}", "--metrics-addr", "127.0.0.1:0", *extra]
    return Server(name, port, argv, work, cpus=cpus, ready=lambda s: http_status(ready, "/ready") == 200)


def null_responder(work, port=None):
    port = port or free_port()
    return Server("null", port, [str(RELEASE / "kubewire-null-responder"), f"127.0.0.1:{port}"], work,
                  cpus=SERVER_CPU)


def served_cluster(args, work, tag):
    """The real API holding the serving cluster (started), its query file,
    and the scripted upstream on the load's CPU (not started)."""
    api = RealApi(work / tag, args.services, args.endpoints, args.pods)
    api.start()
    queries = work / "queries.txt"
    query_file(queries, args.services)
    upstream = null_responder(work)
    upstream.name = "upstream"
    upstream.cpus = LOAD_CPU
    return api, queries, upstream


def part_serve(args, work, report):
    api, queries, upstream = served_cluster(args, work, "api-serve")
    try:
        upstream.start()
        for label, cpus, procs in (("one CPU", SERVER_CPU, 1), ("two CPUs", "0-1", 2)):
            serve_on(args, work, report, api, queries, upstream, label, cpus, procs)
    finally:
        upstream.stop()
        api.stop()


def serve_on(args, work, report, api, queries, upstream, label, cpus, procs):
    null = null_responder(work)
    null.cpus = cpus
    servers = [null,
               coredns(work, "coredns", api.info["kubeconfig"], upstream.port, cpus=cpus, procs=procs),
               kubewire(work, "kubewire", api.info["kubeconfig"], upstream.port, cpus=cpus)]
    try:
        for s in servers:
            s.start(timeout=120)
        # Every server answers the same: a sample, so that a broken setup
        # cannot pass for a fast one.
        for s in range(0, args.services, max(args.services // 20, 1)):
            name = f"svc-{s}.ns-{s % NAMESPACES}.svc.cluster.local"
            answers = {srv.name: ask(srv.port, name) for srv in servers[1:]}
            if len(set(answers.values())) != 1 or answers["kubewire"] is None or answers["kubewire"][0] != 0:
                raise RuntimeError(f"{name}: the servers disagree: {answers}")
        report += [f"## Serving cluster names on {label} ({args.services} services, {args.endpoints} endpoints, "
                   f"{args.pods} pods)", "",
                   f"`kubewire-bench compare` on CPU {LOAD_CPU}, servers on CPUs {cpus} (CoreDNS with "
                   f"GOMAXPROCS={procs}, kubewire with one core per CPU), "
                   f"{args.rounds} interleaved rounds of {args.seconds} s per load. CPU per query is the "
                   "server's scheduler time per answered query; ratios are per pair, medians over rounds.", ""]
        for load in [int(x) for x in args.loads.split(",")]:
            out = bench_compare(servers, queries, args.seconds, args.rounds, load, work / f"compare-{load}",
                                load_cpu=LOAD_CPU)
            print(out, flush=True)
            title = f"### Offered load {load:,} qps" if load else "### Closed loop"
            report += [title, "", ("\n" + out).replace("\n## ", "\n#### ").strip(), ""]
    finally:
        for s in servers:
            s.stop()


def part_dnstap(args, work, report):
    """Each server with and without dnstap (client queries and responses,
    no message bytes) to a golang-dnstap collector, at a load CoreDNS
    keeps up with on one CPU."""
    api, queries, upstream = served_cluster(args, work, "api-dnstap")
    collectors = {}
    servers = []
    try:
        upstream.start()
        sockets = {}
        for name in ("coredns", "kubewire"):
            sockets[name] = work / f"{name}-tap.sock"
            collectors[name] = start(f"{name}-collector", LOAD_CPU, [peers_bin("dnstap"), "-u", str(sockets[name]),
                                     "-w", str(work / f"{name}.fstrm")], work)
        for sock in sockets.values():
            deadline = time.monotonic() + 10
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        kubeconfig = api.info["kubeconfig"]
        servers = [null_responder(work),
                   coredns(work, "coredns", kubeconfig, upstream.port),
                   coredns(work, "coredns-dnstap", kubeconfig, upstream.port,
                           extra=f"dnstap unix://{sockets['coredns']}"),
                   kubewire(work, "kubewire", kubeconfig, upstream.port),
                   kubewire(work, "kubewire-dnstap", kubeconfig, upstream.port,
                            extra=("--dnstap", f"unix://{sockets['kubewire']}"))]
        for s in servers:
            s.start(timeout=120)
        load = args.dnstap_load
        report += [f"## dnstap on and off, at {load:,} qps", "",
                   "Each server on CPU 0 (CoreDNS with GOMAXPROCS=1), the load and both golang-dnstap "
                   f"collectors (`dnstap -u SOCK -w FILE`) on CPU 1; {args.rounds} interleaved rounds of "
                   f"{args.seconds} s. \"-dnstap\" sends CLIENT_QUERY and CLIENT_RESPONSE for every query, "
                   "without the message bytes (CoreDNS's `dnstap unix://SOCK`, kubewire's `--dnstap "
                   "unix://SOCK`).", ""]
        out = bench_compare(servers, queries, args.seconds, args.rounds, load, work / "compare-dnstap",
                            load_cpu=LOAD_CPU)
        print(out, flush=True)
        report += [("\n" + out).replace("\n## ", "\n### ").strip(), ""]
        for name in ("coredns", "kubewire"):
            size = (work / f"{name}.fstrm").stat().st_size if (work / f"{name}.fstrm").exists() else 0
            report += [f"- {name}'s collector wrote {size:,} bytes."]
        report += [""]
    finally:
        for s in servers:
            s.stop()
        stop(collectors)
        upstream.stop()
        api.stop()


def part_sync(args, work, report):
    api = RealApi(work / "api-sync", args.sync_services, args.sync_endpoints, args.sync_pods)
    loaded = time.monotonic()
    api.start()
    print(f"loaded the sync cluster in {time.monotonic() - loaded:.0f} s", flush=True)
    upstream = null_responder(work)
    upstream.cpus = LOAD_CPU
    rows = {"coredns": [], "kubewire": []}
    try:
        upstream.start()
        for rnd in range(args.sync_rounds):
            for make in (coredns, kubewire):
                server = make(work, make.__name__, api.info["kubeconfig"], upstream.port, pods="verified",
                              cpus=SERVER_CPU)
                ready_s = server.start(timeout=300)
                time.sleep(2)
                rss = server.rss_kib()
                sample = ask(server.port, "svc-1.ns-1.svc.cluster.local")
                server.stop()
                if sample is None or sample[0] != 0:
                    raise RuntimeError(f"{server.name}: svc-1.ns-1 answered {sample}")
                rows[server.name].append((ready_s, rss))
                print(f"sync round {rnd + 1} {server.name}: ready in {ready_s:.2f} s, RSS {rss / 1024:.1f} MiB",
                      flush=True)
    finally:
        upstream.stop()
        api.stop()
    rule_mb = (args.sync_pods + args.sync_services) * 0.000858 + 49.1
    report += [f"## Sync: {args.sync_services} services, {args.sync_endpoints} endpoints, {args.sync_pods} pods "
               "(pods verified)", "",
               f"Each server started {args.sync_rounds} times, alternately, on CPU {SERVER_CPU} (CoreDNS with "
               "GOMAXPROCS=1, kubewire with one core), "
               "against the same loaded API server. Start to ready is from the process's start to /ready "
               "answering 200; RSS is VmRSS 2 s after that. Medians.", "",
               "| server | start to ready s | RSS MiB | RSS MB |", "| --- | --- | --- | --- |"]
    for name, values in rows.items():
        ready_s = statistics.median(v[0] for v in values)
        rss = statistics.median(v[1] for v in values)
        report.append(f"| {name} | {ready_s:.2f} | {rss / 1024:.1f} | {rss * 1024 / 1e6:.1f} |")
    report.append(f"| CoreDNS's published rule, (pods + services) × 0.000858 + 49.1 | | | {rule_mb:.1f} |")
    k, c = rows["kubewire"], rows["coredns"]
    report += ["", f"kubewire ÷ CoreDNS: start to ready "
               f"{statistics.median(v[0] for v in k) / statistics.median(v[0] for v in c):.3f}, RSS "
               f"{statistics.median(v[1] for v in k) / statistics.median(v[1] for v in c):.3f}.", ""]


def part_propagation(args, work, report):
    api = RealApi(work / "api-propagation", 100, 500, 0)
    api.start()
    upstream = null_responder(work)
    upstream.cpus = LOAD_CPU
    servers = [coredns(work, "coredns", api.info["kubeconfig"], upstream.port, cpus="0-1"),
               kubewire(work, "kubewire", api.info["kubeconfig"], upstream.port, cpus="0-1")]
    times = {s.name: [] for s in servers}
    # svc-0 is headless: its slice svc-0-abc holds 5 endpoints.
    path = "/apis/discovery.k8s.io/v1/namespaces/ns-0/endpointslices/svc-0-abc"
    name = "svc-0.ns-0.svc.cluster.local"
    try:
        upstream.start()
        for s in servers:
            s.start(timeout=120)
        slice_ = api.request("GET", path)
        for flip in range(args.flips):
            ready = flip % 2 == 1
            endpoints = slice_["endpoints"]
            endpoints[0]["conditions"] = {"ready": ready}
            want = len(endpoints) if ready else len(endpoints) - 1
            api.request("PATCH", path, {"endpoints": endpoints})
            start = time.monotonic()
            # Each server is asked first on every other flip: the one asked
            # second pays the first one's round trip.
            order = servers if flip % 2 == 0 else servers[::-1]
            pending = {s.name: s for s in order}
            while pending and time.monotonic() - start < 10:
                for server_name, server in list(pending.items()):
                    reply = ask(server.port, name, timeout=0.1)
                    if reply and reply[1] == want:
                        times[server_name].append(time.monotonic() - start)
                        del pending[server_name]
            if pending:
                raise RuntimeError(f"flip {flip}: {list(pending)} did not follow within 10 s")
    finally:
        for s in [*servers, upstream]:
            s.stop()
        api.stop()

    def pct(values, p):
        values = sorted(values)
        return values[round((len(values) - 1) * p)] * 1000

    report += ["## Propagation: an endpoint flips at the API server", "",
               f"{args.flips} flips of one endpoint's `ready` in a headless Service's slice (PATCH, acknowledged), "
               "then both servers polled over UDP (one query at a time, each asked first on every other flip) until they answer the new set. "
               "The time includes the API server's watch fan-out and the polling's own round trips.", "",
               "| server | p50 ms | p99 ms |", "| --- | --- | --- |"]
    for server_name, values in times.items():
        report.append(f"| {server_name} | {pct(values, 0.5):.2f} | {pct(values, 0.99):.2f} |")
    report += ["", f"kubewire ÷ CoreDNS, p99: {pct(times['kubewire'], 0.99) / pct(times['coredns'], 0.99):.3f}.", ""]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="serve,sync,propagation")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--loads", default="20000,50000,0")
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=5000)
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--sync-services", type=int, default=10_000)
    ap.add_argument("--sync-endpoints", type=int, default=50_000)
    ap.add_argument("--sync-pods", type=int, default=100_000)
    ap.add_argument("--sync-rounds", type=int, default=3)
    ap.add_argument("--flips", type=int, default=100)
    ap.add_argument("--dnstap-load", type=int, default=10_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "coredns.md"))
    args = ap.parse_args()
    ensure_debian([("dnsperf", "dnsperf")])
    build_release()
    work = Path(tempfile.mkdtemp(prefix="kubewire-coredns-"))
    version = {}
    for line in (ROOT / "bench" / "peers" / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            version[key] = value
    report = ["# CoreDNS beside kubewire, on one real API server", "",
              f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}. kubewire at "
              f"{git_commit()}; CoreDNS {version.get('COREDNS_VERSION')}, kube-apiserver "
              f"{version.get('KUBERNETES_VERSION')}, etcd {version.get('ETCD_VERSION')} (bench/peers/build.sh).", "",
              "Command:", "", "```sh",
              "python3 bench/compare_coredns.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"
                  and v != ap.get_default(k)) + (f" --out {args.out}" if args.out != ap.get_default("out") else ""),
              "```", ""]
    parts = args.parts.split(",")
    if "serve" in parts:
        part_serve(args, work, report)
    if "propagation" in parts:
        part_propagation(args, work, report)
    if "sync" in parts:
        part_sync(args, work, report)
    if "dnstap" in parts:
        part_dnstap(args, work, report)
    Path(args.out).write_text("\n".join(report) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
