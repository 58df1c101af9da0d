#!/usr/bin/env bash
# Runs issue 3's RPC benchmark in one go: the same Rust client (client/benches/rpc.rs)
# against the real daemon, a bare tonic no-op server and a Python grpcio no-op server,
# each its own process on a temp Unix socket, and prints one table. See bench/README.md.
#
# Needs: cargo, python3 with the venv module, and PyPI reachable the first time (grpcio
# and grpcio-tools go into bench/.venv, which is gitignored). Exits 127 when a tool is
# missing, 1 when a step fails. Set RPC_BENCH_OUT=dir to keep the raw JSON lines and the
# servers' logs there; RPC_BENCH_SECONDS sets each closed-loop run's length (default 3),
# RPC_BENCH_ROUNDS the number of alternating loopd/bare unary rounds (default 3).
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_EACH=${RPC_BENCH_SECONDS:-3}
ROUNDS=${RPC_BENCH_ROUNDS:-3}

BENCH_NAME=bench/rpc.sh
# shellcheck source=bench/venv.sh
. bench/venv.sh
ensure_venv "grpc, grpc_tools" grpcio grpcio-tools

out=${RPC_BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"
run=$(mktemp -d) # sockets, the daemon's config and state
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$run"
    [ -n "${RPC_BENCH_OUT:-}" ] || rm -rf "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() {
    echo "$*" >&2
}

die() {
    echo "bench/rpc.sh: $*" >&2
    exit 1
}

step "building release binaries (loopd, the rpc load tool) ..."
cargo build --quiet --release -p loopd-daemon 2>"$out/cargo.log" ||
    { tail -n 30 "$out/cargo.log" >&2; die "cargo build -p loopd-daemon failed"; }
tool=$(cargo bench --quiet -p loopd-client --bench rpc --no-run --message-format=json \
    2>>"$out/cargo.log" |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "rpc" and m.get("executable"):
        print(m["executable"])') ||
    { tail -n 30 "$out/cargo.log" >&2; die "cargo bench --bench rpc --no-run failed"; }
[ -x "$tool" ] || die "no rpc bench executable found"

# Room for the runs: a million events in the ring at once, and the batch run's
# millions of pending timers.
cat >"$run/loopd.toml" <<'EOF'
[limits]
event_ring_capacity = 1048576
max_pending_handles_per_caller = 100000000
EOF

# Starts "$@" in the background, logging to $out/$name.log; waits for its socket.
start() {
    local name=$1 socket=$2
    shift 2
    "$@" >"$out/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 500); do
        python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' \
            "$socket" 2>/dev/null && return 0
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 0.02
    done
    tail -n 20 "$out/$name.log" >&2
    die "$name did not listen on $socket"
}

step "starting loopd, the bare tonic server and the grpcio server ..."
RUST_LOG=warn start loopd "$run/loopd.sock" target/release/loopd --config "$run/loopd.toml" \
    --socket "$run/loopd.sock" --state-dir "$run/state"
start bare "$run/bare.sock" "$tool" --bench bare-server "$run/bare.sock"
start grpcio "$run/grpcio.sock" "$VENV/bin/python" bench/grpcio_server.py "$run/grpcio.sock"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# Runs the load tool against server $1 with the rest of the arguments.
measure() {
    local server=$1
    shift
    step "  $server: $*"
    "$tool" --bench --target "unix:$run/$server.sock" --label "$server" \
        --seconds "$SECONDS_EACH" "$@" >>"$out/$server.jsonl" ||
        die "the load tool failed against $server ($*)"
}

step "measuring (about $(((SECONDS_EACH + 1) * (2 * ROUNDS + 3) + 15)) s) ..."
# Fire latency first, on a daemon that holds no timers yet: the later runs leave
# millions of 3600 s timers pending.
measure loopd fire-latency
measure loopd events --subscribers 1
measure loopd events --subscribers 10
# Unary rounds alternate loopd and bare, so that both see the same background load; the
# table takes the median of each.
for _ in $(seq "$ROUNDS"); do
    measure loopd unary
    measure bare unary
done
measure grpcio unary
measure loopd batch
measure bare batch

echo
echo "$(uname -srm), $(nproc) cores, load average before: $load_before," \
    "after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(rustc --version); $("$VENV/bin/python" --version);" \
    "grpcio $("$VENV/bin/python" -c 'import grpc; print(grpc.__version__)')"
echo
python3 bench/rpc_table.py "$out"/loopd.jsonl "$out"/bare.jsonl "$out"/grpcio.jsonl
