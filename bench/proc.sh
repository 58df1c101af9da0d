#!/usr/bin/env bash
# Issue 5's process benchmark: spawning `true` (one at a time and 20 in flight) and
# reading 1 GiB of a child's stdout, on the bare C library (posix_spawn + waitpid, the
# ceiling), loopd, asyncio and uvloop, in one run, and one table with the ratios and the
# goals. See bench/README.md.
#
# Needs: cargo, a C compiler (cc), python3 with the venv module, and PyPI reachable the
# first time (uvloop is installed into bench/.venv, which is gitignored). Exits 127 when a
# tool is missing, 1 when a step fails.
#   PROC_BENCH_OUT=dir     keep the raw JSON lines there
#   PROC_BENCH_ROUNDS=n    rounds of every workload (default 3; the table shows medians)
#   PROC_BENCH_RT=1        run every measured program under `chrt -f 50` (needs root)
set -euo pipefail

cd "$(dirname "$0")/.."

BENCH_NAME=bench/proc.sh
# shellcheck source=bench/venv.sh
. bench/venv.sh
ensure_venv "uvloop" uvloop
command -v cc >/dev/null || fail "cc not found: install a C compiler (apt-get install gcc)"

rounds=${PROC_BENCH_ROUNDS:-3}
case $rounds in '' | *[!0-9]* | 0) fail "PROC_BENCH_ROUNDS must be a positive number, not '$rounds'" ;; esac
rt=()
if [ "${PROC_BENCH_RT:-0}" = 1 ]; then
    command -v chrt >/dev/null || fail "chrt not found (util-linux)"
    rt=(chrt -f 50)
fi

out=${PROC_BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"
[ -n "${PROC_BENCH_OUT:-}" ] || trap 'rm -rf "$out"' EXIT

# Every loop spawns the same absolute path, so no PATH search is measured.
true_path=$(type -P true) || fail "no true program in PATH"
gib=1073741824
seq_n=2000
conc_n=3000
uvloop_n=500 # uvloop forks (about 5x slower): fewer children, same rate

echo "building the ceiling (cc -O2 bench/proc_ceiling.c) ..." >&2
cc -O2 -o "$out/proc_ceiling" bench/proc_ceiling.c ||
    { echo "bench/proc.sh: cc bench/proc_ceiling.c failed" >&2; exit 1; }
echo "building loopd's side (cargo bench --bench spawn --no-run) ..." >&2
if ! cargo bench --bench spawn --no-run --message-format=json >"$out/cargo.json" 2>"$out/cargo.log"; then
    tail -n 30 "$out/cargo.log" >&2
    echo "bench/proc.sh: cargo bench --bench spawn --no-run failed" >&2
    exit 1
fi
loopd_bin=$("$VENV/bin/python" -c '
import json, sys
for line in open(sys.argv[1]):
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "spawn" \
            and msg.get("executable"):
        print(msg["executable"])
' "$out/cargo.json")
[ -x "$loopd_bin" ] || { echo "bench/proc.sh: no spawn bench executable in cargo's output" >&2; exit 1; }

writer=("$out/proc_ceiling" write "$gib" 65536)
py=("$VENV/bin/python" bench/proc_bench.py)

# run LOOP ARGS...: runs one workload on LOOP, appending its JSON lines to $out/LOOP.jsonl.
run() {
    local loop=$1
    shift
    local cmd
    case $loop in
        bare) cmd=("$out/proc_ceiling") ;;
        loopd) cmd=("$loopd_bin" --bench) ;;
        *) cmd=("${py[@]}" --loop "$loop") ;;
    esac
    if ! "${rt[@]}" "${cmd[@]}" "$@" >>"$out/$loop.jsonl"; then
        echo "bench/proc.sh: $loop $* failed" >&2
        exit 1
    fi
}

loops=(bare loopd asyncio uvloop)
for round in $(seq "$rounds"); do
    echo "round $round of $rounds ..." >&2
    # Rotate the order each round, so that drift in the machine's load spreads evenly.
    shift_by=$(((round - 1) % ${#loops[@]}))
    order=("${loops[@]:shift_by}" "${loops[@]:0:shift_by}")
    for loop in "${order[@]}"; do
        n=$seq_n m=$conc_n
        [ "$loop" = uvloop ] && n=$uvloop_n m=$uvloop_n
        run "$loop" seq "$n" "$true_path"
        run "$loop" conc "$m" 20 "$true_path"
        if [ "$loop" = bare ]; then
            run bare read "$gib" 65536
        else
            run "$loop" read "$gib" "${writer[@]}"
        fi
    done
done

echo
echo "$(uname -srm), $(nproc) cores, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(rustc --version); $(cc --version | head -n 1); $("$VENV/bin/python" --version);" \
    "uvloop $("$VENV/bin/python" -c 'import uvloop; print(uvloop.__version__)')"
echo "$rounds rounds; children: $true_path with stdin, stdout, stderr on /dev/null; reader's" \
    "child: proc_ceiling write (64 KiB writes) with stdout on a pipe${rt:+; under ${rt[*]}}"
echo
"$VENV/bin/python" bench/proc_table.py "$out"/bare.jsonl "$out"/loopd.jsonl \
    "$out"/asyncio.jsonl "$out"/uvloop.jsonl
