#!/usr/bin/env bash
# The null responder's I/O paths side by side, interleaved in one run: the
# recvmmsg floor against io_uring with replies as `send` requests (the one
# kubewire keeps), as `sendmsg` requests, and as one `sendmmsg` call per turn.
# Responders on CPU 0, the load on CPU 1. Results: bench/results/io-uring.md.
#
# Usage: bench/uring_variants.sh   (RATES="50000 0" ROUNDS=6 SECONDS_EACH=4)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p kubewire-bench
B=target/release/kubewire-bench
N=target/release/kubewire-null-responder
work=$(mktemp -d)
$B scenario --services 1000 --headless-every 5 --endpoints-per-headless 10 --pods 1000 \
  --namespaces 10 --queries 100000 --seed 1 --out-dir "$work" >/dev/null
$N 127.0.0.1:5300 0 recvmmsg >/dev/null 2>&1 & A=$!
$N 127.0.0.1:5301 0 io_uring >/dev/null 2>&1 & U1=$!
$N 127.0.0.1:5302 0 io_uring-sendmsg >/dev/null 2>&1 & U2=$!
$N 127.0.0.1:5303 0 io_uring-sendmmsg >/dev/null 2>&1 & U3=$!
trap 'kill $A $U1 $U2 $U3 2>/dev/null; rm -rf "$work"' EXIT
sleep 1
for rate in ${RATES:-50000 0}; do
  $B compare --target null=127.0.0.1:5300@$A --target uring_send=127.0.0.1:5301@$U1 \
    --target uring_sendmsg=127.0.0.1:5302@$U2 --target uring_sendmmsg=127.0.0.1:5303@$U3 \
    --queries "$work/queries.txt" --rate "$rate" --seconds "${SECONDS_EACH:-4}" \
    --rounds "${ROUNDS:-6}" --cpus 1 2>&1 | grep -v "^round"
done
