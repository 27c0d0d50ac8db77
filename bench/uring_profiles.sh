#!/usr/bin/env bash
# Where the CPU goes on each UDP path: the two null responders and kubewire
# on each path, one at a time on CPU 0, each under the same 50k qps from
# `kubewire-bench run` on CPU 1, recorded with `perf record -g`. Prints, per
# server, the CPU it used and its share in the kernel's receive, send and
# wait paths (perf's children totals), and draws a flamegraph of each into
# $OUT (default bench/results/flamegraphs).
#
# Usage: bench/uring_profiles.sh   (RATE=50000 SECONDS_EACH=5 OUT=dir)
# Needs perf (apt-get install linux-perf) and root.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-50000}
SECONDS_EACH=${SECONDS_EACH:-5}
OUT=${OUT:-bench/results/flamegraphs}
cargo build --release -q -p kubewire -p kubewire-bench
B=target/release/kubewire-bench
N=target/release/kubewire-null-responder
K=target/release/kubewire
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT"
$B scenario --services 1000 --headless-every 5 --endpoints-per-headless 10 --pods 1000 \
  --namespaces 10 --queries 100000 --seed 1 --out-dir "$work" >/dev/null
kubewire() {
  exec taskset -c 0 $K --manifests "$work/manifests.json" --cores 0-0 --listen "127.0.0.1:$1" \
    --health-addr "" --ready-addr "" --metrics-addr 127.0.0.1:0 --udp-io "$2"
}
printf '| server | CPU ms in %s s | io_uring_enter | send path | receive path | sleeping and waking |\n' "$SECONDS_EACH"
printf '| --- | --- | --- | --- | --- | --- |\n'
for spec in null:recvmmsg null-io_uring:io_uring kubewire:batched kubewire-io_uring:io_uring; do
  name=${spec%%:*} io=${spec##*:}
  port=$((5340 + RANDOM % 100))
  case $name in
    null*) taskset -c 0 $N "127.0.0.1:$port" 0 "$io" >/dev/null 2>&1 & ;;
    *) kubewire "$port" "$io" >/dev/null 2>&1 & ;;
  esac
  pid=$!
  sleep 2
  taskset -c 1 $B run --server "127.0.0.1:$port" --server-pid "$pid" --queries "$work/queries.txt" \
    --rate "$RATE" --seconds "$SECONDS_EACH" --cpus 1 --profile "$OUT/$name.svg" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  data="$OUT/$name.perf.data"
  total=$(perf report -i "$data" --stdio 2>/dev/null | awk '/^# Event count/ {print int($5/1e6)}')
  share() { perf report -i "$data" --children --stdio -g none -F overhead_children,sym 2>/dev/null \
    | awk -v pat="$1" '$0 ~ pat {gsub("%","",$1); s+=$1} END {printf "%.1f%%", s}'; }
  printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$total" \
    "$(share '\\] __do_sys_io_uring_enter$')" \
    "$(share '\\] (io_send|__sys_sendmmsg)$')" \
    "$(share '\\] (__io_run_local_work|do_recvmmsg)$')" \
    "$(share '\\] __schedule$')"
  rm -f "$data"
done
