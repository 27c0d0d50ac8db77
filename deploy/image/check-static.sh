#!/usr/bin/env bash
# Builds kubewire as deploy/image/Dockerfile does (glibc linked in), checks
# that the binary is static, and runs it as it runs FROM scratch: with an
# empty environment, from an empty directory. It serves the embedded demo
# cluster on loopback; one UDP query for kubernetes.default.svc.cluster.local
# A must get NOERROR with one answer.
#
#   deploy/image/check-static.sh [TARGET_DIR]    # default: target/static
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
target_dir=${1:-"$repo/target/static"}
triple=x86_64-unknown-linux-gnu
port=15353

RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$triple" -p kubewire \
    --manifest-path "$repo/Cargo.toml" --target-dir "$target_dir"
binary="$target_dir/$triple/release/kubewire"

# Rust links a crt-static x86-64 binary as static-pie: `file` says
# "static-pie linked" and ldd "statically linked". A non-PIE static binary
# gives "statically linked" and "not a dynamic executable".
kind=$(file -b "$binary")
echo "file: $kind"
case "$kind" in
    *"static-pie linked"* | *"statically linked"*) ;;
    *) echo "FAIL: file does not call $binary static" >&2; exit 1 ;;
esac
# ldd exits 1 for a non-PIE static binary.
loader=$(ldd "$binary" 2>&1 || true)
echo "ldd: $loader"
case "$loader" in
    *"not a dynamic executable"* | *"statically linked"*) ;;
    *) echo "FAIL: ldd lists libraries for $binary" >&2; exit 1 ;;
esac

empty=$(mktemp -d)
log=$(mktemp)
pid=
finish() {
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$empty" "$log"
}
trap finish EXIT

# No HOME, PATH or KUBECONFIG; nothing on the HTTP ports.
(cd "$empty" && exec env -i "$binary" --demo --listen "127.0.0.1:$port" --cores 1 \
    --metrics-addr '' --health-addr '' --ready-addr '') 2>"$log" &
pid=$!

# The ready line comes once every core holds the demo cluster.
for _ in $(seq 100); do
    if grep -q ' ready cores=' "$log"; then
        break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "FAIL: kubewire exited before it was ready:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done
if ! grep -q ' ready cores=' "$log"; then
    echo "FAIL: kubewire was not ready after 10 s:" >&2
    cat "$log" >&2
    exit 1
fi

python3 - "$port" <<'EOF'
import random, socket, struct, sys

port = int(sys.argv[1])
name = "kubernetes.default.svc.cluster.local"
qid = random.randrange(1 << 16)
question = b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
question += b"\0" + struct.pack("!HH", 1, 1)  # A, IN
query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question  # RD

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(2)
for _ in range(3):
    sock.sendto(query, ("127.0.0.1", port))
    try:
        reply, _ = sock.recvfrom(4096)
        break
    except socket.timeout:
        continue
else:
    sys.exit(f"FAIL: no reply from 127.0.0.1:{port}")

rid, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", reply[:12])
if rid != qid or not flags & 0x8000:
    sys.exit(f"FAIL: not a reply to our query: id {rid} (sent {qid}), flags {flags:#06x}")
if flags & 0xF != 0:
    sys.exit(f"FAIL: RCODE {flags & 0xF}, want 0 (NOERROR)")
if ancount != 1:
    sys.exit(f"FAIL: {ancount} answers, want 1")
# The answer follows the echoed question; its owner is a pointer to it (C0 0C).
answer = 12 + len(question) + 2
rtype, _, _, rdlength = struct.unpack("!HHIH", reply[answer:answer + 10])
if rtype != 1 or rdlength != 4:
    sys.exit(f"FAIL: answer of type {rtype}, length {rdlength}; want A, 4")
print(f"{name}. A {socket.inet_ntoa(reply[answer + 10:answer + 14])}")
EOF

# SIGINT stops at once (SIGTERM would serve lameduck_ms more).
kill -INT "$pid"
wait "$pid" || true
pid=
echo "OK: $binary is static and answers with an empty environment"
