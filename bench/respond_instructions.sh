#!/usr/bin/env bash
# Instructions per query in `AnswerTable::respond`, counted by callgrind
# (repeatable whatever else the machine does), for a kubewire binary: the
# generated scenario's first 20k queries (hits, NODATA, NXDOMAIN search
# misses) at 1k qps from dnsperf, on one core. For a before/after of a
# change on the query path, run it on both binaries.
#
# Usage: bench/respond_instructions.sh BINARY [kubewire flags...]
#   e.g. bench/respond_instructions.sh target/release/kubewire --config zonal.toml
# Needs valgrind and dnsperf.
set -euo pipefail
BIN=$1; shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$(dirname "$0")/.."
cargo build --release -q -p kubewire-bench
target/release/kubewire-bench scenario --services 1000 --headless-every 5 --endpoints-per-headless 10 \
  --pods 1000 --namespaces 10 --queries 20000 --seed 1 --out-dir "$work" >/dev/null
port=$((5400 + RANDOM % 100))
valgrind --tool=callgrind --callgrind-out-file="$work/cg" --toggle-collect='*AnswerTable*respond*' \
  "$BIN" --manifests "$work/manifests.json" --cores 0-0 --listen "127.0.0.1:$port" \
  --health-addr "" --ready-addr "" --metrics-addr "" --log-level warn "$@" >/dev/null 2>&1 &
pid=$!
sleep 30  # start-up under callgrind
dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -n 1 -Q 1000 -t 10 | grep -E "Queries (sent|completed)"
# kubewire does not stop under valgrind (its io_uring waits); dump, then kill.
callgrind_control -d "$pid" >/dev/null
sleep 3
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
total=$(callgrind_annotate "$work/cg.1" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "respond: $total instructions, $((total / 20000)) per query"
