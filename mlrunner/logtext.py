"""A command's log as text to show: its last lines as a terminal would have left them.

Used wherever a log's tail is shown (the FAIL lines, the live display, ``mlrunner
failures``, notifications) and where its lines are read (failure signatures).
"""

from __future__ import annotations

import re

TAIL_LINES = 5  # of a failed command's log, printed under its FAIL line
TAIL_WIDTH = 300  # characters of one such line
# CSI (colours, cursor moves), OSC (titles, links) and other two-character escapes
ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


def clean_line(raw: str) -> str:
    """One line of a log, printable: escape sequences dropped, control characters as spaces
    (its indentation kept: a traceback's frames stay readable)."""
    if "\x1b" in raw:
        raw = ESCAPES.sub("", raw)
    return "".join(ch if ch.isprintable() else " " for ch in raw).rstrip()


def tail_lines(text: str | None, n: int = TAIL_LINES, width: int = TAIL_WIDTH) -> list[str]:
    """The last ``n`` non-empty lines of a log's tail as a terminal would leave them: a
    progress bar's latest state (after a '\\r'), escape sequences dropped, control
    characters as spaces, each line cut to ``width`` characters."""
    if not text:
        return []
    out: list[str] = []
    for raw in reversed(text.split("\n")):
        line = clean_line(raw.rstrip("\r").rsplit("\r", 1)[-1])
        if line.strip():
            out.append(line if len(line) <= width else line[: width - 1] + "…")
            if len(out) == n:
                break
    return out[::-1]
