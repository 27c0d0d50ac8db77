#!/usr/bin/env bash
# Node-local HA pair: restarts one instance under steady load and counts the
# queries lost, in a network namespace of its own (run as root).
#
#   bench/handover.sh            # after: cargo build --release -p kubewire -p kubewire-bench
#
# Two kubewire instances share 169.254.20.10:53 through SO_REUSEPORT (the
# second with node_local.skip_teardown). While kubewire-bench sends RATE
# queries a second for SECS seconds, instance B is stopped and started again
# twice: once with SIGTERM (lameduck, then the handover that takes its
# sockets out of the group and drains them), once with SIGKILL (no
# handover: what an OOM kill costs). Each restart gets its own load run.
set -euo pipefail
cd "$(dirname "$0")/.."
KW=${KUBEWIRE:-target/release/kubewire}
BENCH=${BENCH:-target/release/kubewire-bench}
RATE=${RATE:-20000}
SECS=${SECS:-8}
NS=kw-handover-$$
OUT=${OUT:-$(mktemp -d)}

ip netns add "$NS"
cleanup() {
  pkill -f "kubewire --config $OUT/" 2>/dev/null || true
  sleep 0.5
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip -n "$NS" link set lo up
kind=dummy
ip -n "$NS" link add kwprobe type dummy 2>/dev/null && ip -n "$NS" link del kwprobe || kind=bridge

config() { # name skip_teardown
  cat > "$OUT/$1.toml" <<TOML
[source]
kind = "demo"
[dns]
listen = ["169.254.20.10:53"]
cores = "1"
[node_local]
enabled = true
interface_kind = "$kind"
skip_teardown = $2
[http]
health_addr = ""
ready_addr = ""
metrics_addr = ""
[lifecycle]
lameduck_ms = 1000
TOML
}
config a true
config b false
printf 'kubernetes.default.svc.cluster.local A\nweb.default.svc.cluster.local A\n' > "$OUT/queries.txt"

start() { ip netns exec "$NS" "$KW" --config "$OUT/$1.toml" >> "$OUT/$1.log" 2>&1 & echo $!; }
a=$(start a)
sleep 1
b=$(start b)
sleep 1

restart_under_load() { # signal
  ip netns exec "$NS" "$BENCH" run --server 169.254.20.10:53 --queries "$OUT/queries.txt" \
    --rate "$RATE" --seconds "$SECS" --sockets 64 --json "$OUT/load-$1.json" > "$OUT/load-$1.txt" &
  local load=$!
  sleep $((SECS / 4))
  kill -"$1" "$b"
  while kill -0 "$b" 2>/dev/null; do sleep 0.05; done
  b=$(start b)
  wait "$load"
  python3 - "$OUT/load-$1.json" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"restart by {sys.argv[2]:>4}: sent {r['sent']}, answered {r['answered']}, lost {r['lost']}, rcodes {r['rcodes']}")
PY
  sleep 1
}
echo "kubewire $(git rev-parse --short HEAD), $RATE qps for $SECS s per run, interface $kind, logs in $OUT"
restart_under_load TERM
restart_under_load KILL
