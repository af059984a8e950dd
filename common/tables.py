"""The one table writer: rows of dicts as CSV, Markdown or aligned console text.

A missing number (None, NaN, inf) is an empty CSV cell; the caller formats the cells of the text tables.
"""
from __future__ import annotations

import csv
import io
import math
from typing import Any


def blank(value: Any) -> Any:
    """None for a missing number (None, NaN, ±inf), else the value."""
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def csv_text(rows: list[dict], columns: list[str]) -> str:
    """``rows`` as CSV with exactly ``columns`` (other keys ignored; missing numbers empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows([{k: "" if blank(r.get(k)) is None else r.get(k) for k in columns} for r in rows])
    return buf.getvalue()


def markdown(head: list[str], body: list[list[str]]) -> str:
    """A Markdown table, columns padded so it also reads as plain text ('|' in a cell becomes '/')."""
    body = [[c.replace("|", "/") for c in row] for row in body]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def console(head: list[str], body: list[list[str]]) -> str:
    """An aligned console table: a header, a rule, one line per row."""
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body])
