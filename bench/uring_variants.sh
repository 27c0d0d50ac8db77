#!/usr/bin/env bash
# The recvmmsg null responder against three io_uring send variants, interleaved.
set -euo pipefail
cd /work/main
B=target/release/kubewire-bench
N=target/release/kubewire-null-responder
$N 127.0.0.1:5300 0 recvmmsg >/dev/null 2>&1 & A=$!
$N 127.0.0.1:5301 0 io_uring >/dev/null 2>/tmp/v1.log & U1=$!
$N 127.0.0.1:5302 0 io_uring-sendmsg >/dev/null 2>/tmp/v2.log & U2=$!
$N 127.0.0.1:5303 0 io_uring-sendmmsg >/dev/null 2>/tmp/v3.log & U3=$!
sleep 1
for rate in ${RATES:-50000 0}; do
  echo "== rate $rate"
  $B compare --target null=127.0.0.1:5300@$A --target uring_send=127.0.0.1:5301@$U1 --target uring_sendmsg=127.0.0.1:5302@$U2 --target uring_sendmmsg=127.0.0.1:5303@$U3 \
     --queries /work/ab/scenario/queries.txt --rate $rate --seconds ${SECONDS_EACH:-4} --rounds ${ROUNDS:-6} --cpus 1 2>&1 | grep -A16 "^## "
done
kill $A $U1 $U2 $U3
