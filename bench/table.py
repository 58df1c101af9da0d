#!/usr/bin/env python3
"""Joins the JSON lines of benches/compare.rs and bench/engine.py into one table.

Usage: table.py FILE.jsonl...  (each line: {"loop", "name", "value", "unit"})

Prints: workload | loopd | asyncio | uvloop | loopd/uvloop | loopd/asyncio | goal, where a
ratio is the plain quotient of the two values (for rows marked "lower is better" a ratio
below 1 favours loopd), and the goal column says whether loopd meets the issue's goal.
Exits non-zero if an input line is not such a JSON object, or if loopd's figures are missing.
"""

import sys

import figures as figures_file

LOOPS = ("loopd", "asyncio", "uvloop")

# name -> (label, higher_is_better)
ROWS = {
    "call_soon": ("a. call_soon 1M, schedule+run", True),
    "call_later_schedule": ("b. call_later 200k, schedule only", True),
    "call_later_run": ("b. call_later 200k, until all fired", True),
    "call_later_wall": ("b. call_later 200k, wall (floor 100 ms)", False),
    "call_later_cancel": ("c. call_later 200k, half cancelled", True),
    "call_soon_threadsafe": ("d. call_soon_threadsafe 200k", True),
    "lateness_p50": ("e. lateness p50", False),
    "lateness_p99": ("e. lateness p99", False),
    "lateness_max": ("e. lateness max", False),
    "lateness_early": ("e. early fires (of 2000)", False),
    "timer_bytes_alloc": ("f. bytes/pending timer, allocator", False),
    "timer_bytes_rss": ("f. bytes/pending timer, RSS", False),
    "timer_closure_bytes": ("f. closure size in that timer", False),
}


def ratio_goal(at_least):
    """A goal on loopd/uvloop."""
    def check(fig):
        r = ratio(fig, "uvloop")
        if r is None:
            return "no uvloop figure"
        verdict = "met" if r >= at_least else f"MISSED by {at_least / r:.1f}x"
        return f">= {at_least:g}x uvloop: {verdict}"
    return check


def bound_goal(text, ok, shortfall):
    def check(fig):
        value = fig.get("loopd")
        if value is None:
            return "no loopd figure"
        return f"{text}: {'met' if ok(value, fig) else 'MISSED, ' + shortfall(value, fig)}"
    return check


def closure(fig):
    return fig.get("_closure", 0.0)


GOALS = {
    "call_soon": ratio_goal(10),
    "call_later_schedule": ratio_goal(10),
    "call_later_wall": bound_goal(
        "<= 150 ms (1.5x floor)", lambda v, f: v <= 150,
        lambda v, f: f"{v / 100:.2f}x the floor"),
    "call_soon_threadsafe": ratio_goal(3),
    "lateness_p99": bound_goal(
        "< 200 us", lambda v, f: v < 200, lambda v, f: f"{v / 200:.1f}x over"),
    "lateness_early": bound_goal(
        "zero early", lambda v, f: v == 0, lambda v, f: f"{v:g} early"),
    "timer_bytes_alloc": bound_goal(
        "< 100 B + closure", lambda v, f: v - closure(f) < 100,
        lambda v, f: f"{v - closure(f) - 100:.0f} B over"),
    "timer_bytes_rss": bound_goal(
        "< 100 B + closure", lambda v, f: v - closure(f) < 100,
        lambda v, f: f"{v - closure(f) - 100:.0f} B over"),
}


def ratio(fig, other):
    a, b = fig.get("loopd"), fig.get(other)
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_value(value, unit):
    if value is None:
        return "-"
    if unit.endswith("/s"):
        if value >= 1e6:
            return f"{value / 1e6:.2f}M/s"
        return f"{value / 1e3:.0f}k/s"
    if unit == "timers":
        return f"{value:g}"
    if unit == "us":
        return f"{value:,.1f} us"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "bytes":
        return f"{value:.1f} B"
    return f"{value:g} {unit}"


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def load(paths):
    figures, units = {}, {}
    for loop, name, value, unit in figures_file.read(paths, "loop", "table.py"):
        figures.setdefault(name, {})[loop] = value
        units[name] = unit
    return figures, units


def render(figures, units):
    header = ["workload", *LOOPS, "loopd/uvloop", "loopd/asyncio", "goal (loopd)"]
    rows = []
    for name, (label, higher) in ROWS.items():
        fig = figures.get(name)
        if fig is None:
            continue
        fig["_closure"] = figures.get("timer_closure_bytes", {}).get("loopd", 0.0)
        direction = "higher" if higher else "lower"
        rows.append([
            f"{label} ({direction} is better)",
            *(fmt_value(fig.get(loop), units[name]) for loop in LOOPS),
            fmt_ratio(ratio(fig, "uvloop")),
            fmt_ratio(ratio(fig, "asyncio")),
            GOALS[name](fig) if name in GOALS else "",
        ])
    return figures_file.markdown(header, rows)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    figures, units = load(sys.argv[1:])
    if not any("loopd" in fig for fig in figures.values()):
        print("table.py: no loopd figures in the input", file=sys.stderr)
        sys.exit(2)
    print(render(figures, units))


if __name__ == "__main__":
    main()
