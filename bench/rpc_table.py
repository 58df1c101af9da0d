#!/usr/bin/env python3
"""Joins the JSON lines of client/benches/rpc.rs into the table of bench/rpc.sh.

Usage: rpc_table.py FILE.jsonl...  (each line: {"server", "name", "value", "unit"};
server is loopd, bare or grpcio)

Prints: figure | loopd | bare tonic | grpcio | loopd/bare | goal. The goals are issue 3's.
A figure measured more than once (rpc.sh's alternating unary rounds) shows its median,
and the runs are listed under the table.
Exits non-zero if a line is not such an object, or if loopd's unary figure is missing.
"""

import statistics
import sys

import figures

SERVERS = ("loopd", "bare", "grpcio")

# name -> label
ROWS = {
    "unary_rps": "unary CallLater, 16 in flight (RPC/s)",
    "unary_p50": "unary CallLater p50 (us)",
    "unary_p99": "unary CallLater p99 (us)",
    "batch_timers_per_s": "ScheduleBatch x1000, 16 in flight (timers/s)",
    "batch_p50": "ScheduleBatch x1000 p50 (us)",
    "events_callbacks_per_s": "1M call_soon via batch, run (callbacks/s)",
    "events_to_1_per_s": "events to 1 subscriber (events/s)",
    "events_to_10_per_s": "events to 10 subscribers (events/s, sum)",
    "fire_to_client_p50": "fire-to-client p50 (us)",
    "fire_to_client_p99": "fire-to-client p99 (us)",
    "fire_lateness_p50": "timer lateness in the loop p50 (us)",
    "fire_lateness_p99": "timer lateness in the loop p99 (us)",
}


def goal(name, fig):
    """The issue's goal for a row, as 'met (...)'/'missed (...)', or ''."""
    loopd = fig.get(("loopd", name))
    if loopd is None:
        return ""
    if name == "unary_rps":
        bare = fig.get(("bare", name))
        if not bare:
            return "no bare figure"
        return verdict(loopd >= 0.8 * bare, ">= 80% of bare")
    if name == "batch_timers_per_s":
        return verdict(loopd >= 500_000, ">= 500,000/s")
    if name == "events_to_1_per_s":
        return verdict(loopd >= 1_000_000, ">= 1,000,000/s")
    if name == "fire_to_client_p99":
        return verdict(loopd < 1000, "< 1 ms")
    return ""


def verdict(ok, what):
    return f"{'met' if ok else 'MISSED'} ({what})"


def cell(value):
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.2f}"


def main(paths):
    runs = {}
    for server, name, value, _ in figures.read(paths, "server", "rpc_table.py"):
        runs.setdefault((server, name), []).append(value)
    fig = {key: statistics.median(values) for key, values in runs.items()}
    if ("loopd", "unary_rps") not in fig:
        sys.exit("no loopd unary_rps figure")
    header = ["figure", "loopd", "bare tonic", "grpcio", "loopd/bare", "goal"]
    rows = []
    for name, label in ROWS.items():
        values = [fig.get((server, name)) for server in SERVERS]
        if all(v is None for v in values):
            continue
        loopd, bare = values[0], values[1]
        ratio = f"{loopd / bare:.2f}" if loopd is not None and bare else "-"
        rows.append([label, *map(cell, values), ratio, goal(name, fig)])
    print(figures.markdown(header, rows))
    repeated = {key: values for key, values in runs.items() if len(values) > 1}
    if repeated:
        print()
    for (server, name), values in sorted(repeated.items()):
        print(f"{server} {name}: median of {', '.join(map(cell, values))}")


if __name__ == "__main__":
    main(sys.argv[1:])
