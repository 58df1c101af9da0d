#!/usr/bin/env bash
# Runs issue 4's echo benchmark in one go: the same native load client (benches/net.rs)
# against loopd's echo server, protocol-based asyncio and uvloop echo servers
# (bench/net_echo.py), a blocking thread-per-connection Rust echo (the ceiling) and a bare
# single-threaded epoll echo (the floor of any event loop's cost), each its own process on
# 127.0.0.1, and prints one table. See bench/README.md.
#
# Needs: cargo, python3 with the venv module, and PyPI reachable the first time (uvloop
# goes into bench/.venv, which is gitignored). Exits 127 when a tool is missing, 1 when a
# step fails. Settings (environment):
#   NET_BENCH_OUT=dir       keep the raw JSON lines and the servers' logs there
#   NET_BENCH_SECONDS=n     length of each measured run, after a 0.5 s warm-up (default 3)
#   NET_BENCH_ROUNDS=n      rounds over all servers; the table shows medians (default 3)
#   NET_BENCH_LOOPD_CMD=cmd the loopd server, run with `bash -c "exec $cmd"`: it must print
#                           its TCP port on 127.0.0.1 on its first stdout line ("PORT", or
#                           "PORT PID" to name the process whose CPU is measured), echo,
#                           and exit on SIGTERM (default: the engine's echo example,
#                           target/release/examples/echo_server; bench/net_loopd.sh runs
#                           the daemon's echo server)
#   NET_BENCH_RT=1          run the servers and the client as real-time processes
#                           (chrt -f 50), so that other work on the machine (a compiler)
#                           does not preempt them; off by default. Client and server
#                           then keep both cores busy, and the kernel's real-time
#                           throttling (sched_rt_runtime_us, 95% by default) may stall
#                           both for the rest of a period: use it only on a loaded machine
# Nothing is pinned: client and server share the machine's cores (2 here).
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_EACH=${NET_BENCH_SECONDS:-3}
ROUNDS=${NET_BENCH_ROUNDS:-3}
LOOPD_CMD=${NET_BENCH_LOOPD_CMD:-target/release/examples/echo_server}
rt=()
if [ "${NET_BENCH_RT:-0}" = 1 ]; then
    rt=(chrt -f 50)
fi

BENCH_NAME=bench/net.sh
# shellcheck source=bench/venv.sh
. bench/venv.sh
ensure_venv "uvloop" uvloop

out=${NET_BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    [ -n "${NET_BENCH_OUT:-}" ] || rm -rf "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() {
    echo "$*" >&2
}

die() {
    echo "bench/net.sh: $*" >&2
    exit 1
}

step "building release binaries (the echo example, the net load tool) ..."
cargo build --quiet --release --example echo_server 2>"$out/cargo.log" ||
    { tail -n 30 "$out/cargo.log" >&2; die "cargo build --example echo_server failed"; }
tool=$(cargo bench --quiet --bench net --no-run --message-format=json 2>>"$out/cargo.log" |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "net" and m.get("executable"):
        print(m["executable"])') ||
    { tail -n 30 "$out/cargo.log" >&2; die "cargo bench --bench net --no-run failed"; }
[ -x "$tool" ] || die "no net bench executable found"
if [ ${#rt[@]} -gt 0 ]; then
    chrt -f 50 true 2>/dev/null || die "NET_BENCH_RT=1 needs chrt and the right to use it (root or CAP_SYS_NICE)"
fi

declare -A port pid
# Starts "$@" in the background, logging stderr to $out/$name.log; waits for the port it
# prints on its first stdout line ("PORT", or "PORT PID" when the process whose CPU counts
# is another one, as bench/net_loopd.sh's daemon).
start() {
    local name=$1
    shift
    "${rt[@]}" "$@" >"$out/$name.port" 2>"$out/$name.log" &
    pids+=($!)
    for _ in $(seq 500); do
        local first
        first=$(head -n 1 "$out/$name.port" 2>/dev/null || true)
        if [[ $first =~ ^([0-9]+)( ([0-9]+))?$ ]]; then
            port[$name]=${BASH_REMATCH[1]}
            pid[$name]=${BASH_REMATCH[3]:-${pids[-1]}}
            return 0
        fi
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 0.02
    done
    tail -n 20 "$out/$name.log" >&2
    die "$name did not print its port"
}

step "starting the echo servers (loopd: $LOOPD_CMD) ..."
start loopd bash -c "exec $LOOPD_CMD"
start uvloop "$VENV/bin/python" bench/net_echo.py --loop uvloop
start asyncio "$VENV/bin/python" bench/net_echo.py --loop asyncio
start blocking "$tool" --bench blocking-server
start epoll "$tool" --bench epoll-server

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# Runs the load tool against server $1 with the rest of the arguments.
measure() {
    local server=$1
    shift
    step "  $server: $*"
    "${rt[@]}" "$tool" --bench --port "${port[$server]}" --server-pid "${pid[$server]}" \
        --label "$server" --seconds "$SECONDS_EACH" "$@" >>"$out/$server.jsonl" ||
        die "the load tool failed against $server ($*)"
}

step "measuring (about $((ROUNDS * 15 * SECONDS_EACH + ROUNDS * 10)) s) ..."
# Each round runs one workload on every server back to back, so that loopd and its
# baselines are measured seconds apart under the same background load; the table shows
# each figure's median, and judges the goals on the median of the per-round ratios.
for _ in $(seq "$ROUNDS"); do
    for workload in "rr --connections 10 --size 1024" \
        "stream --connections 1 --size 65536" "stream --connections 4 --size 65536"; do
        for server in loopd uvloop asyncio blocking epoll; do
            # shellcheck disable=SC2086 # the workload's words are separate arguments
            measure "$server" $workload
        done
    done
done

echo
echo "$(uname -srm), $(nproc) cores (client and servers share them, nothing pinned)," \
    "load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(rustc --version); $("$VENV/bin/python" --version);" \
    "uvloop $("$VENV/bin/python" -c 'import uvloop; print(uvloop.__version__)')"
echo "loopd server: $LOOPD_CMD; real-time (NET_BENCH_RT): ${NET_BENCH_RT:-0}"
echo
python3 bench/net_table.py "$out"/loopd.jsonl "$out"/uvloop.jsonl "$out"/asyncio.jsonl \
    "$out"/blocking.jsonl "$out"/epoll.jsonl
