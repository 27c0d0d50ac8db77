#!/usr/bin/env bash
# kubewire's UDP paths side by side, interleaved in one run: `batched`, the
# io_uring path of this build (and a copy of it, the A/A pair), and the
# io_uring path of a baseline binary. At a sparse rate each query finds the
# core parked, so p50 there is the wake-up path's latency; at 10k and 50k
# qps the core stays in its loop. Servers on CPU 0, the load on CPU 1, the
# scenario of bench/uring_variants.sh. Results: bench/results/io-uring.md.
#
# Usage: BASELINE=/path/to/kubewire bench/uring_wake.sh
#        (RATES="200 10000 50000" ROUNDS=5 SECONDS_EACH=4)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BASELINE:?set BASELINE to the kubewire binary to compare against}"
cargo build --release -q -p kubewire -p kubewire-bench
B=target/release/kubewire-bench
work=$(mktemp -d)
$B scenario --services 1000 --headless-every 5 --endpoints-per-headless 10 --pods 1000 \
  --namespaces 10 --queries 100000 --seed 1 --out-dir "$work" >/dev/null
printf '[dns]\nudp_io = "batched"\n' >"$work/batched.toml"
printf '[dns]\nudp_io = "io_uring"\n' >"$work/io_uring.toml"
cp target/release/kubewire "$work/kubewire-aa"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
start() { # PORT BINARY CONFIG
  "$2" --manifests "$work/manifests.json" --cores 0-0 --listen "127.0.0.1:$1" \
    --health-addr "" --ready-addr "" --metrics-addr "" --config "$work/$3.toml" \
    >"$work/$1.log" 2>&1 &
  pids+=($!)
}
start 5321 target/release/kubewire batched
start 5322 target/release/kubewire io_uring
start 5323 "$work/kubewire-aa" io_uring
start 5324 "$BASELINE" io_uring
sleep 2
for rate in ${RATES:-200 10000 50000}; do
  $B compare --target batched=127.0.0.1:5321@${pids[0]} --target io_uring=127.0.0.1:5322@${pids[1]} \
    --target io_uring_aa=127.0.0.1:5323@${pids[2]} --target baseline=127.0.0.1:5324@${pids[3]} \
    --queries "$work/queries.txt" --rate "$rate" --seconds "${SECONDS_EACH:-4}" \
    --rounds "${ROUNDS:-5}" --cpus 1 2>&1 | grep -v "^round"
done
