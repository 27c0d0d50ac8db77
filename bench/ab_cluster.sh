#!/usr/bin/env bash
# Kubewire builds side by side with the null responder, all on CPU 0, each
# serving a scenario's cluster names at 50k qps from CPU 1 in turn:
# `kubewire-bench compare` with interleaved rounds. It reports CPU and user
# time per query for each, and the same-round ratios of every pair.
#
# Usage: SCENARIO=DIR [ROUNDS=9] [OUT=DIR] [KUBEWIRE_ARGS=...] bench/ab_cluster.sh NAME=BINARY...
#   e.g. bench/ab_cluster.sh before=/tmp/kubewire-old after=target/release/kubewire
#   KUBEWIRE_ARGS go to every kubewire, e.g. "--udp-io io_uring".
#   DIR from: kubewire-bench scenario --services 1000 --headless-every 5 \
#     --endpoints-per-headless 10 --pods 1000 --namespaces 10 --queries 100000 --seed 1 --out-dir DIR
set -euo pipefail
cd "$(dirname "$0")/.."
S=${SCENARIO:?set SCENARIO to a kubewire-bench scenario directory (manifests.json, queries.txt)}
[ $# -gt 0 ] || { echo "name at least one NAME=BINARY" >&2; exit 2; }
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
taskset -c 0 target/release/kubewire-null-responder 127.0.0.1:5340 0 >"$OUT/null.log" 2>&1 &
PIDS=("$!"); TARGETS=(--target "null=127.0.0.1:5340@$!")
port=5341
for spec in "$@"; do
  name=${spec%%=*}; binary=${spec#*=}
  taskset -c 0 "$binary" --manifests "$S/manifests.json" --cores 0-0 --listen 127.0.0.1:$port \
    --ttl 3600 --health-addr "" --ready-addr "" --metrics-addr 127.0.0.1:0 --log-level warn \
    ${KUBEWIRE_ARGS:-} >"$OUT/$name.log" 2>&1 &
  PIDS+=("$!"); TARGETS+=(--target "$name=127.0.0.1:$port@$!"); port=$((port + 1))
done
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null' EXIT
sleep 4
target/release/kubewire-bench compare --queries "$S/queries.txt" --rate 50000 --seconds 5 \
  --rounds "${ROUNDS:-9}" --cpus 1 --out-dir "$OUT" "${TARGETS[@]}" >"$OUT/report.txt" 2>"$OUT/rounds.txt"
echo "reports in $OUT"
sed -n '/^| server/,$p' "$OUT/report.txt"
