#!/usr/bin/env python3
"""Joins the JSON lines of benches/net.rs into the table of bench/net.sh.

Usage: net_table.py FILE.jsonl...  (each line: {"server", "name", "value", "unit"};
server is loopd, uvloop, asyncio or blocking)

Prints: figure | loopd | uvloop | asyncio | blocking | loopd/uvloop | loopd/blocking | goal.
The goals are issue 4's: requests/s at least 1.5x uvloop's, and one stream's MB/s at least
80% of the blocking echo's (the ceiling). A figure measured in several rounds shows its
median, and the rounds are listed under the table.
Exits non-zero if a line is not such an object, or if loopd's figures are missing.
"""

import json
import statistics
import sys

SERVERS = ("loopd", "uvloop", "asyncio", "blocking")

# name -> label
ROWS = {
    "rr_rps": "1 KiB ping-pong, 10 conns (req/s)",
    "rr_p50_us": "1 KiB ping-pong p50 (us)",
    "rr_p99_us": "1 KiB ping-pong p99 (us)",
    "stream1_mbps": "64 KiB chunks, 1 conn (MB/s)",
    "stream4_mbps": "64 KiB chunks, 4 conns (MB/s)",
    "rr_server_us_per_req": "ping-pong: server CPU per request (us)",
    "rr_server_cpu": "ping-pong: server CPU (cores)",
    "rr_client_cpu": "ping-pong: client CPU (cores)",
    "stream1_server_cpu": "1 stream: server CPU (cores)",
    "stream1_client_cpu": "1 stream: client CPU (cores)",
    "stream4_server_cpu": "4 streams: server CPU (cores)",
    "stream4_client_cpu": "4 streams: client CPU (cores)",
}


def goal(name, fig):
    """The issue's goal for a row, as 'met (...)'/'MISSED (...)', or ''."""
    loopd = fig.get(("loopd", name))
    if loopd is None:
        return ""
    if name == "rr_rps":
        uvloop = fig.get(("uvloop", name))
        if not uvloop:
            return "no uvloop figure"
        return verdict(loopd >= 1.5 * uvloop, ">= 1.5x uvloop")
    if name == "stream1_mbps":
        ceiling = fig.get(("blocking", name))
        if not ceiling:
            return "no blocking figure"
        return verdict(loopd >= 0.8 * ceiling, ">= 0.8x blocking")
    return ""


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
    for path in paths:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    key = (obj["server"], obj["name"])
                    runs.setdefault(key, []).append(float(obj["value"]))
                except (ValueError, KeyError, TypeError) as err:
                    sys.exit(f"{path}:{n}: not a figure ({err}): {line.strip()}")
    fig = {key: statistics.median(values) for key, values in runs.items()}
    for name in ("rr_rps", "stream1_mbps"):
        if ("loopd", name) not in fig:
            sys.exit(f"no loopd {name} figure")
    header = ["figure", *SERVERS, "loopd/uvloop", "loopd/blocking", "goal"]
    rows = []
    for name, label in ROWS.items():
        values = [fig.get((server, name)) for server in SERVERS]
        if all(v is None for v in values):
            continue
        loopd, uvloop, blocking = values[0], values[1], values[3]
        rows.append(
            [label, *map(cell, values), ratio(loopd, uvloop), ratio(loopd, blocking),
             goal(name, fig)]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    repeated = {key: values for key, values in runs.items() if len(values) > 1}
    if repeated:
        print()
    for (server, name), values in sorted(repeated.items()):
        print(f"{server} {name}: median of {', '.join(map(cell, values))}")


if __name__ == "__main__":
    main(sys.argv[1:])
