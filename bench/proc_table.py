#!/usr/bin/env python3
"""Joins the JSON lines of bench/proc.sh's runs into one table.

Usage: proc_table.py FILE.jsonl...  (each line: {"loop", "name", "value", "unit"}; a
(loop, name) pair may appear once per round)

Prints: workload | bare | loopd | asyncio | uvloop | loopd/bare | loopd/asyncio |
loopd/uvloop | goal, each value the median of its rounds (the single rounds are listed
under the table), a ratio the plain quotient of two medians. Exits non-zero if a line is
not such a JSON object or if loopd's figures are missing.
"""

import statistics
import sys

import figures

LOOPS = ("bare", "loopd", "asyncio", "uvloop")
OTHERS = ("bare", "asyncio", "uvloop")

# name -> (label, higher_is_better)
ROWS = {
    "spawn_seq": ("spawn `true`, one at a time", True),
    "spawn_conc": ("spawn `true`, 20 in flight", True),
    "read_throughput": ("read 1 GiB of child stdout", True),
    "spawn_seq_cpu": ("parent CPU per spawn, one at a time", False),
    "spawn_conc_cpu": ("parent CPU per spawn, 20 in flight", False),
}


def goal_ratio(other, at_least):
    def check(fig):
        r = ratio(fig, other)
        if r is None:
            return f"no {other} figure"
        verdict = "met" if r >= at_least else "MISSED"
        return f">= {at_least:g}x {other}: {verdict}"
    return check


def goal_floor(floor, unit):
    def check(fig):
        value = fig.get("loopd")
        if value is None:
            return "no loopd figure"
        return f">= {floor:g} {unit}: {'met' if value >= floor else 'MISSED'}"
    return check


GOALS = {
    "spawn_seq": goal_ratio("bare", 0.9),
    "spawn_conc": goal_ratio("asyncio", 1.3),
    "read_throughput": goal_floor(1000, "MB/s"),
}


def ratio(fig, other):
    a, b = fig.get("loopd"), fig.get(other)
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_value(value, unit):
    if value is None:
        return "-"
    if unit == "us":
        return f"{value:,.0f} us"
    if unit == "MB/s":
        return f"{value:,.0f} MB/s"
    return f"{value:,.0f}/s"


def load(paths):
    runs, units = {}, {}
    for loop, name, value, unit in figures.read(paths, "loop", "proc_table.py"):
        runs.setdefault(name, {}).setdefault(loop, []).append(value)
        units[name] = unit
    return runs, units


def render(runs, units):
    header = ["workload", *LOOPS, *(f"loopd/{o}" for o in OTHERS), "goal (loopd)"]
    rows, details = [], []
    for name, (label, higher) in ROWS.items():
        if name not in runs:
            continue
        fig = {loop: statistics.median(v) for loop, v in runs[name].items()}
        direction = "higher" if higher else "lower"
        rows.append([
            f"{label} ({direction} is better)",
            *(fmt_value(fig.get(loop), units[name]) for loop in LOOPS),
            *("-" if ratio(fig, o) is None else f"{ratio(fig, o):.2f}x" for o in OTHERS),
            GOALS[name](fig) if name in GOALS else "",
        ])
        for loop in LOOPS:
            if loop in runs[name]:
                each = ", ".join(fmt_value(v, units[name]) for v in runs[name][loop])
                details.append(f"  {name} {loop}: {each}")
    out = [figures.markdown(header, rows)]
    out += ["", "Each value above is the median of these rounds:", *details]
    return "\n".join(out)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    runs, units = load(sys.argv[1:])
    if not any("loopd" in fig for fig in runs.values()):
        print("proc_table.py: no loopd figures in the input", file=sys.stderr)
        sys.exit(2)
    print(render(runs, units))


if __name__ == "__main__":
    main()
