"""Plain aligned tables for pipes and files: no rich, no events (``ledger ls`` and
``status`` start fast)."""

from __future__ import annotations


def plain_table(headers: list[str], rows: list[list[str]]) -> str:
    """Aligned columns for pipes and files (no rich import, nothing wrapped)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)
