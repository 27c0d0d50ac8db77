#!/usr/bin/env bash
# Two kubewire binaries and the null responder on CPU 0, each serving a
# scenario at 50k qps from CPU 1 in turn: the user and system CPU ticks of each
# over 4 s (4 rounds, from /proc), then `kubewire-bench compare` (7 rounds).
# Written for the receive-header change (bench/results/udp-user-time.md).
#
# Usage: SCENARIO=DIR BEFORE=OLD_BINARY [AFTER=NEW_BINARY] bench/rx_headers.sh
#   DIR from: kubewire-bench scenario --services 1000 --headless-every 5 \
#     --endpoints-per-headless 10 --pods 1000 --namespaces 10 --queries 100000 --seed 1 --out-dir DIR
set -euo pipefail
cd "$(dirname "$0")/.."
S=${SCENARIO:?set SCENARIO to a kubewire-bench scenario directory (manifests.json, queries.txt)}
OUT=$(mktemp -d)
taskset -c 0 target/release/kubewire-null-responder 127.0.0.1:5340 0 >$OUT/null.log 2>&1 & N=$!
start() { taskset -c 0 $1 --manifests $S/manifests.json --cores 0-0 --listen 127.0.0.1:$2 --ttl 3600 \
  --health-addr "" --ready-addr "" --metrics-addr 127.0.0.1:0 --log-level warn >$OUT/$2.log 2>&1 & echo $!; }
B=$(start ${BEFORE:?set BEFORE to the old kubewire binary} 5341); A=$(start ${AFTER:-target/release/kubewire} 5342)
trap 'kill $N $B $A 2>/dev/null' EXIT
sleep 4
for r in 1 2 3 4; do for t in "null 5340 $N" "before 5341 $B" "after 5342 $A"; do set -- $t
  (taskset -c 1 target/release/kubewire-bench run --server 127.0.0.1:$2 --queries $S/queries.txt --rate 50000 --seconds 6 >/dev/null 2>&1 &)
  sleep 1; read u0 s0 < <(awk '{print $14, $15}' /proc/$3/stat); sleep 4; read u1 s1 < <(awk '{print $14, $15}' /proc/$3/stat)
  echo "round $r $1 user_ticks=$((u1-u0)) sys_ticks=$((s1-s0))"; sleep 2; done; done | tee $OUT/ticks.txt
target/release/kubewire-bench compare --queries $S/queries.txt --rate 50000 --seconds 5 --rounds 7 --cpus 1 --out-dir $OUT \
  --target null=127.0.0.1:5340@$N --target before=127.0.0.1:5341@$B --target after=127.0.0.1:5342@$A > $OUT/report.txt 2>&1
sed -n '/^| server/,/^$/p' $OUT/report.txt
grep -A8 "Per pair" $OUT/report.txt
