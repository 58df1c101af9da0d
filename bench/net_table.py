#!/usr/bin/env python3
"""Joins the JSON lines of benches/net.rs into the table of bench/net.sh.

Usage: net_table.py FILE.jsonl...  (each line: {"server", "name", "value", "unit"};
server is loopd, uvloop, asyncio, blocking or epoll)

Prints: figure | loopd | uvloop | asyncio | blocking | epoll | loopd/uvloop | loopd/blocking
| loopd/epoll | epoll/uvloop | goal. The goals are issue 4's: requests/s at least 1.5x
uvloop's, and one stream's MB/s at least 80% of the blocking echo's (the ceiling). A
figure measured in several rounds shows its median, and the rounds are listed under the
table. `epoll` is the bare single-threaded epoll echo: loopd/epoll is how close loopd is to
the least any single-threaded event loop can cost here, and epoll/uvloop is the most such a
server reached against uvloop on this machine.

The client's CPU per request is derived (its cores over the round's requests/s): one client
core cannot drive more than 10^6 / that many requests/s, whatever the server.

With several rounds, a goal is judged on the median of the per-round ratios: each round
measures loopd and its baseline seconds apart, so a ratio within a round cancels the
machine's slow drift (on a shared VM one server's rate moves by 2x between rounds), where
a ratio of medians mixes rounds measured under different conditions. Both are shown.
Exits non-zero if a line is not such an object, or if loopd's figures are missing.
"""

import statistics
import sys

import figures

SERVERS = ("loopd", "uvloop", "asyncio", "blocking", "epoll")

# name -> label
ROWS = {
    "rr_rps": "1 KiB ping-pong, 10 conns (req/s)",
    "rr_p50_us": "1 KiB ping-pong p50 (us)",
    "rr_p99_us": "1 KiB ping-pong p99 (us)",
    "stream1_mbps": "64 KiB chunks, 1 conn (MB/s)",
    "stream4_mbps": "64 KiB chunks, 4 conns (MB/s)",
    "rr_server_us_per_req": "ping-pong: server CPU per request (us)",
    "rr_client_us_per_req": "ping-pong: client CPU per request (us)",
    "rr_server_cpu": "ping-pong: server CPU (cores)",
    "rr_client_cpu": "ping-pong: client CPU (cores)",
    "stream1_server_cpu": "1 stream: server CPU (cores)",
    "stream1_client_cpu": "1 stream: client CPU (cores)",
    "stream4_server_cpu": "4 streams: server CPU (cores)",
    "stream4_client_cpu": "4 streams: client CPU (cores)",
}


# name -> (baseline server, least loopd/baseline ratio)
GOALS = {"rr_rps": ("uvloop", 1.5), "stream1_mbps": ("blocking", 0.8)}

# Per-round ratios listed under the table besides the goals': (server, baseline, figure).
CONTEXT = (("loopd", "epoll", "rr_rps"), ("epoll", "uvloop", "rr_rps"))


def paired_ratios(runs, name, baseline, server="loopd"):
    """server/baseline for each round that measured both, in round order."""
    ours, base = runs.get((server, name), []), runs.get((baseline, name), [])
    return [a / b for a, b in zip(ours, base) if b]


def goal(name, runs):
    """The issue's goal for a row, as 'met (...)'/'MISSED (...)', or ''."""
    if name not in GOALS:
        return ""
    baseline, least = GOALS[name]
    ratios = paired_ratios(runs, name, baseline)
    if not ratios:
        return f"no {baseline} figure"
    median = statistics.median(ratios)
    return verdict(median >= least, f"per-round median {median:.2f} vs >= {least}x {baseline}")


def derive_client_cost(runs):
    """Adds rr_client_us_per_req (the load client's CPU per request, from its cores and
    the requests/s of the same round) for every server measured with both."""
    for server in SERVERS:
        cores, rps = runs.get((server, "rr_client_cpu"), []), runs.get((server, "rr_rps"), [])
        costs = [c * 1e6 / r for c, r in zip(cores, rps) if r]
        if costs:
            runs[(server, "rr_client_us_per_req")] = costs


def verdict(ok, what):
    return f"{'met' if ok else 'MISSED'} ({what})"


def cell(value):
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"


def main(paths):
    runs = {}
    for server, name, value, _ in figures.read(paths, "server", "net_table.py"):
        runs.setdefault((server, name), []).append(value)
    derive_client_cost(runs)
    fig = {key: statistics.median(values) for key, values in runs.items()}
    for name in ("rr_rps", "stream1_mbps"):
        if ("loopd", name) not in fig:
            sys.exit(f"no loopd {name} figure")
    header = ["figure", *SERVERS, "loopd/uvloop", "loopd/blocking", "loopd/epoll",
              "epoll/uvloop", "goal"]
    rows = []
    for name, label in ROWS.items():
        values = [fig.get((server, name)) for server in SERVERS]
        if all(v is None for v in values):
            continue
        loopd, uvloop, blocking, epoll = values[0], values[1], values[3], values[4]
        rows.append(
            [label, *map(cell, values), ratio(loopd, uvloop), ratio(loopd, blocking),
             ratio(loopd, epoll), ratio(epoll, uvloop), goal(name, runs)]
        )
    print(figures.markdown(header, rows))
    print()
    for name, (baseline, least) in GOALS.items():
        ratios = paired_ratios(runs, name, baseline)
        if ratios:
            print(f"{name} loopd/{baseline} per round: {', '.join(f'{r:.2f}' for r in ratios)};"
                  f" median {statistics.median(ratios):.2f} (goal >= {least})")
    for server, baseline, name in CONTEXT:
        ratios = paired_ratios(runs, name, baseline, server)
        if ratios:
            print(f"{name} {server}/{baseline} per round: {', '.join(f'{r:.2f}' for r in ratios)};"
                  f" median {statistics.median(ratios):.2f}")
    repeated = {key: values for key, values in runs.items() if len(values) > 1}
    if repeated:
        print()
    for (server, name), values in sorted(repeated.items()):
        print(f"{server} {name}: median of {', '.join(map(cell, values))}")


if __name__ == "__main__":
    main(sys.argv[1:])
