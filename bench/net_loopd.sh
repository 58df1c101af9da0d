#!/usr/bin/env bash
# The daemon as bench/net.sh's loopd server: starts `loopd` on a temp socket and state dir,
# creates an echo server on 127.0.0.1 (port 0) on its default loop with
# `loopctl server create --protocol echo`, prints "PORT PID" (the daemon's pid, whose CPU
# net.sh measures) on its first stdout line, and waits; SIGTERM or SIGINT stop the daemon.
#
#   cargo build --release -p loopd-daemon -p loopd-client
#   NET_BENCH_LOOPD_CMD=bench/net_loopd.sh bench/net.sh
#
# Needs the daemon's NetService (loopctl server create). Exits 127 when a binary is
# missing, 1 when the daemon or the server does not come up.
set -euo pipefail

cd "$(dirname "$0")/.."
for bin in loopd loopctl; do
    if [ ! -x "target/release/$bin" ]; then
        echo "bench/net_loopd.sh: target/release/$bin is missing" \
            "(cargo build --release -p loopd-daemon -p loopd-client)" >&2
        exit 127
    fi
done

run=$(mktemp -d)
daemon=
cleanup() {
    if [ -n "$daemon" ]; then
        kill "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 0' TERM INT

target/release/loopd --socket "$run/loopd.sock" --state-dir "$run/state" \
    --log-level warn >&2 &
daemon=$!
for _ in $(seq 500); do
    python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' \
        "$run/loopd.sock" 2>/dev/null && break
    kill -0 "$daemon" 2>/dev/null || { echo "bench/net_loopd.sh: loopd exited" >&2; exit 1; }
    sleep 0.02
done

created=$(target/release/loopctl --socket "$run/loopd.sock" --json server create \
    --host 127.0.0.1 --port 0 --protocol echo) ||
    { echo "bench/net_loopd.sh: loopctl server create failed" >&2; exit 1; }
port=$(python3 -c 'import json, sys
print(json.loads(sys.argv[1])["addresses"][0].rsplit(":", 1)[1])' "$created") ||
    { echo "bench/net_loopd.sh: no port in $created" >&2; exit 1; }
echo "$port $daemon"
wait "$daemon"
