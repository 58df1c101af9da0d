#!/usr/bin/env python3
"""The engine comparison workloads (a-f) on asyncio or uvloop, run once each.

The same workloads as benches/compare.rs (loopd); prints one JSON object per figure on
stdout, {"loop", "name", "value", "unit"}, with the same names and units, so that
bench/table.py can join the three runs.

Every workload checks that exactly the expected callbacks ran and exits non-zero
otherwise. Random delays use a fixed seed.

Usage: engine.py --loop asyncio|uvloop
"""

import argparse
import asyncio
import gc
import itertools
import json
import os
import random
import sys
import threading
import time
import tracemalloc

SEED = 0x5EED
CALL_SOON_N = 1_000_000
TIMERS_N = 200_000
TIMERS_SPREAD = 0.100
CANCEL_SPREAD = 0.001
THREADSAFE_N = 200_000
LATENESS_N = 2_000
LATENESS_SPAN = 2.0
PENDING_N = 1_000_000
PENDING_TRACED_N = 100_000  # tracemalloc makes each allocation ~10x dearer: fewer timers

LOOP_NAME = "asyncio"


def emit(name, value, unit):
    print(json.dumps({"loop": LOOP_NAME, "name": name, "value": value, "unit": unit}),
          flush=True)


def expect(what, got, want):
    if got != want:
        sys.exit(f"{what}: {got} callbacks ran, expected {want}")


class Countdown:
    """Counts callbacks and stops the loop when `target` have run."""

    def __init__(self, loop, target):
        self.loop, self.ran, self.target = loop, 0, target

    def tick(self):
        self.ran += 1
        if self.ran == self.target:
            self.loop.stop()


def call_soon(new_loop):
    """a. call_soon N times, then run until all ran (the callback is C-level: a counter)."""
    loop = new_loop()
    counter = itertools.count()
    tick = counter.__next__
    started = time.perf_counter()
    for _ in range(CALL_SOON_N):
        loop.call_soon(tick)
    loop.call_soon(loop.stop)
    loop.run_forever()
    took = time.perf_counter() - started
    expect("call_soon", next(counter), CALL_SOON_N)
    emit("call_soon", CALL_SOON_N / took, "callbacks/s")
    loop.close()


def call_later(new_loop):
    """b. call_later with random delays in [0, 100 ms]: scheduling rate, run rate, wall time."""
    loop = new_loop()
    rng = random.Random(SEED)
    delays = [rng.uniform(0, TIMERS_SPREAD) for _ in range(TIMERS_N)]
    countdown = Countdown(loop, TIMERS_N)
    tick = countdown.tick
    started = time.perf_counter()
    for delay in delays:
        loop.call_later(delay, tick)
    scheduled = time.perf_counter() - started
    loop.run_forever()
    took = time.perf_counter() - started
    expect("call_later", countdown.ran, TIMERS_N)
    emit("call_later_schedule", TIMERS_N / scheduled, "timers/s")
    emit("call_later_run", TIMERS_N / took, "timers/s")
    emit("call_later_wall", took * 1e3, "ms")
    loop.close()


def call_later_cancel(new_loop):
    """c. call_later with random delays in [0, 1 ms], every other one cancelled at once."""
    loop = new_loop()
    rng = random.Random(SEED)
    delays = [rng.uniform(0, CANCEL_SPREAD) for _ in range(TIMERS_N)]
    live = TIMERS_N // 2
    countdown = Countdown(loop, live)
    tick = countdown.tick
    started = time.perf_counter()
    for i, delay in enumerate(delays):
        timer = loop.call_later(delay, tick)
        if i % 2 == 1:
            timer.cancel()
    loop.run_forever()
    took = time.perf_counter() - started
    expect("call_later_cancel", countdown.ran, live)
    emit("call_later_cancel", TIMERS_N / took, "timers/s")
    loop.close()


def call_soon_threadsafe(new_loop):
    """d. call_soon_threadsafe N times from another thread, until all ran on the loop."""
    loop = new_loop()
    state = {"ran": 0, "started": None, "done": None}

    def tick():
        state["ran"] += 1
        if state["ran"] == THREADSAFE_N:
            state["done"] = time.perf_counter()
            loop.stop()

    def produce():
        send = loop.call_soon_threadsafe
        for _ in range(THREADSAFE_N):
            send(tick)

    producer = threading.Thread(target=produce)

    def start():
        state["started"] = time.perf_counter()
        producer.start()

    loop.call_soon(start)
    loop.run_forever()
    producer.join()
    expect("call_soon_threadsafe", state["ran"], THREADSAFE_N)
    emit("call_soon_threadsafe", THREADSAFE_N / (state["done"] - state["started"]),
         "callbacks/s")
    loop.close()


def lateness(new_loop):
    """e. Lateness of timers spread evenly over 2 s: now - when, in each callback.

    `now` is loop.time() for asyncio (it is time.monotonic()). uvloop's loop.time() is
    libuv's cached whole-millisecond loop clock, which would hide early fires, so for uvloop
    `now` is time.monotonic(): the same CLOCK_MONOTONIC, read when the callback runs.
    """
    loop = new_loop()
    countdown = Countdown(loop, LATENESS_N)
    late = []
    now = time.monotonic if LOOP_NAME == "uvloop" else loop.time

    def fire(when):
        late.append(now() - when)
        countdown.tick()

    step = LATENESS_SPAN / LATENESS_N
    start = loop.time()
    for i in range(LATENESS_N):
        when = start + step * (i + 1)
        loop.call_at(when, fire, when)
    loop.run_forever()
    expect("lateness", countdown.ran, LATENESS_N)
    late.sort()

    def quantile(q):
        return late[round((len(late) - 1) * q)]

    emit("lateness_p50", quantile(0.5) * 1e6, "us")
    emit("lateness_p99", quantile(0.99) * 1e6, "us")
    emit("lateness_max", quantile(1.0) * 1e6, "us")
    emit("lateness_early", sum(1 for x in late if x < 0), "timers")
    loop.close()


def rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGESIZE")


def noop():
    pass


def schedule_pending(loop, n):
    for _ in range(n):
        loop.call_later(3600, noop)


def memory_per_timer(new_loop):
    """f. Bytes per pending timer, timers an hour out: by RSS (1M) and by tracemalloc (100k).

    Two passes, because tracemalloc's own bookkeeping would inflate the RSS figure; the
    traced pass schedules fewer timers, since tracing 1M takes about 20 s.
    The callback is one shared function, so no closure is counted.
    """
    gc.collect()
    loop = new_loop()
    before = rss_bytes()
    schedule_pending(loop, PENDING_N)
    after = rss_bytes()
    loop.close()
    del loop
    gc.collect()

    loop = new_loop()
    tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    schedule_pending(loop, PENDING_TRACED_N)
    traced_after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    loop.close()
    emit("timer_bytes_alloc", (traced_after - traced_before) / PENDING_TRACED_N, "bytes")
    emit("timer_bytes_rss", (after - before) / PENDING_N, "bytes")
    emit("timer_closure_bytes", 0, "bytes")


def loop_factory(name):
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        sys.exit("uvloop is not installed in this Python (bench/engine.sh makes a venv with it)")
    return uvloop.new_event_loop


def main():
    global LOOP_NAME
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    LOOP_NAME = args.loop
    new_loop = loop_factory(args.loop)
    for workload in (memory_per_timer, call_soon, call_later, call_later_cancel,
                     call_soon_threadsafe, lateness):
        workload(new_loop)


if __name__ == "__main__":
    main()
