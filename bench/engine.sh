#!/usr/bin/env bash
# Runs the engine comparison (workloads a-f) on loopd, asyncio and uvloop in one go and
# prints one table with the ratios and the issue's goals. See bench/README.md.
#
# Needs: cargo, python3 with the venv module, and PyPI reachable the first time (uvloop is
# installed into bench/.venv, which is gitignored). Exits 127 when a tool is missing,
# 1 when a step fails. Set ENGINE_BENCH_OUT=dir to keep the raw JSON lines there.
set -euo pipefail

cd "$(dirname "$0")/.."

BENCH_NAME=bench/engine.sh
# shellcheck source=bench/venv.sh
. bench/venv.sh
ensure_venv "uvloop" uvloop

out=${ENGINE_BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"
[ -n "${ENGINE_BENCH_OUT:-}" ] || trap 'rm -rf "$out"' EXIT

echo "building and running loopd (cargo bench --bench compare) ..." >&2
if ! cargo bench --quiet --bench compare >"$out/loopd.jsonl" 2>"$out/cargo.log"; then
    tail -n 30 "$out/cargo.log" >&2
    echo "bench/engine.sh: cargo bench --bench compare failed" >&2
    exit 1
fi
for loop in asyncio uvloop; do
    echo "running $loop (bench/engine.py --loop $loop) ..." >&2
    "$VENV/bin/python" bench/engine.py --loop "$loop" >"$out/$loop.jsonl"
done

echo
echo "$(uname -srm), $(nproc) cores, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(rustc --version); $("$VENV/bin/python" --version);" \
    "uvloop $("$VENV/bin/python" -c 'import uvloop; print(uvloop.__version__)')"
echo
"$VENV/bin/python" bench/table.py "$out/loopd.jsonl" "$out/asyncio.jsonl" "$out/uvloop.jsonl"
