#!/usr/bin/env python3
"""asyncio's and uvloop's side of bench/proc.sh: the workloads of benches/spawn.rs.

Usage:
  proc_bench.py --loop asyncio|uvloop seq N PROGRAM       N children one after the other
  proc_bench.py --loop asyncio|uvloop conc N K PROGRAM    N children, K in flight
  proc_bench.py --loop asyncio|uvloop read BYTES ARGV...  one child, stdout read to EOF

Spawned children get stdin, stdout and stderr on DEVNULL (create_subprocess_exec, then
`await proc.wait()`); the reader runs loop.subprocess_exec with a protocol that counts
bytes in pipe_data_received (stdout PIPE, the rest DEVNULL), as loopd's reader does.
Every child must exit 0 and the reader must count exactly BYTES, else this exits 1.

Prints one JSON object per figure on stdout: {"loop", "name", "value", "unit"}; the spawn
modes also print the CPU time this process (all threads, not its children) spent per spawn.
"""

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time

LOOP_NAME = "asyncio"


def emit(name, value, unit):
    print(json.dumps({"loop": LOOP_NAME, "name": name, "value": round(value, 1),
                      "unit": unit}), flush=True)


async def one(program):
    proc = await asyncio.create_subprocess_exec(
        program, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    code = await proc.wait()
    if code != 0:
        sys.exit(f"{program} exited with {code}")


async def spawn_run(total, in_flight, program):
    left = total

    async def worker():
        nonlocal left
        while left > 0:
            left -= 1
            await one(program)

    start, cpu_start = time.perf_counter(), cpu_seconds()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    return total / elapsed, cpu / total * 1e6


def cpu_seconds():
    """CPU seconds (user + system) this process used so far, all threads, no children."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Counter(asyncio.SubprocessProtocol):
    def __init__(self, done):
        self.bytes = 0
        self.done = done

    def pipe_data_received(self, fd, data):
        self.bytes += len(data)

    def connection_lost(self, exc):
        # After process_exited and every pipe's EOF (loopd's process_exited waits for both).
        self.done.set_result(None)


async def read_run(total, argv):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    start = time.perf_counter()
    transport, counter = await loop.subprocess_exec(
        lambda: Counter(done), *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL)
    await done
    elapsed = time.perf_counter() - start
    code = transport.get_returncode()
    transport.close()
    if code != 0 or counter.bytes != total:
        sys.exit(f"{argv}: read {counter.bytes} bytes (want {total}), exit {code}")
    return total / elapsed / 1e6


def positive(text):
    n = int(text)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"not a positive number: {text}")
    return n


def main():
    global LOOP_NAME
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), required=True)
    parser.add_argument("mode", choices=("seq", "conc", "read"))
    parser.add_argument("args", nargs="+")
    opts = parser.parse_args()
    LOOP_NAME = opts.loop
    if opts.loop == "uvloop":
        import uvloop
        run = uvloop.run
    else:
        run = asyncio.run
    a = opts.args
    if opts.mode in ("seq", "conc") and len(a) == (2 if opts.mode == "seq" else 3):
        in_flight = 1 if opts.mode == "seq" else positive(a[1])
        rate, cpu = run(spawn_run(positive(a[0]), in_flight, a[-1]))
        emit(f"spawn_{opts.mode}", rate, "spawns/s")
        emit(f"spawn_{opts.mode}_cpu", cpu, "us")
    elif opts.mode == "read" and len(a) >= 2:
        emit("read_throughput", run(read_run(positive(a[0]), a[1:])), "MB/s")
    else:
        parser.error(f"bad arguments for {opts.mode}: {a}")


if __name__ == "__main__":
    main()
