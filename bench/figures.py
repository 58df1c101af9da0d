"""What the bench table scripts share: reading benchmark JSON lines, and printing a
Markdown table with padded columns.

Every line of a figures file is one JSON object, {WHO, "name", "value", "unit"}, where WHO
is "loop" (engine.sh, proc.sh) or "server" (rpc.sh, net.sh): the program measured.
"""

import json
import sys


def read(paths, who, tool):
    """Yields (who, name, value, unit) for each figure in `paths`, skipping blank lines;
    exits naming the tool, the file and the line for a line that is not a figure."""
    for path in paths:
        with open(path) as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    yield row[who], row["name"], float(row["value"]), row["unit"]
                except (ValueError, KeyError, TypeError) as err:
                    sys.exit(f"{tool}: {path}:{number}: not a figure ({err}): {line.strip()}")


def markdown(header, rows):
    """A Markdown table of `header` and `rows` (lists of strings), each column padded to
    its widest cell."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)
