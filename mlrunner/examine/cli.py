"""What ``mlrunner table`` and ``mlrunner diff`` need: their options parsed, and the table
of an output dir built without a notebook.

The CLI parses its options, calls :func:`cli_table` (or :class:`mlrunner.examine.api.Results`)
and renders (a rich table, CSV, or JSON through :func:`mlrunner.examine.table.records`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from mlrunner.errors import UsageError
from mlrunner.examine.api import Results
from mlrunner.examine.summary import parse_summary


def parse_regex_options(regexes: Sequence[str], logs: Sequence[str]) -> list[tuple[str, str, str | None]]:
    """``--regex NAME=PATTERN`` values paired with ``--log CMD`` values.

    Pairing: no ``--log`` -> every regex reads every command's latest log; one ``--log``
    -> all regexes read it; otherwise one ``--log`` per ``--regex``, in order.
    """
    if logs and len(logs) not in (1, len(regexes)):
        raise UsageError(
            f"{len(regexes)} --regex but {len(logs)} --log options",
            hint="give one --log for all regexes, or one --log after each --regex",
        )
    out: list[tuple[str, str, str | None]] = []
    for i, text in enumerate(regexes):
        name, sep, pattern = text.partition("=")
        if not sep or not name.strip() or not pattern:
            raise UsageError(
                f"--regex {text!r} is not NAME=PATTERN",
                hint=r"e.g. --regex 'bleu=BLEU4 = ([\d.]+)' --log test (group 1 is the value)",
            )
        log = logs[0] if len(logs) == 1 else logs[i] if logs else None
        out.append((name.strip(), pattern, log))
    return out


def parse_summary_options(values: Sequence[str]) -> dict[str, str] | None:
    """``--summary METRIC=KIND`` values -> ``{metric: kind}`` (None when there are none)."""
    if not values:
        return None
    out: dict[str, str] = {}
    for text in values:
        metric, sep, kind = text.rpartition("=")
        if not sep or not metric.strip() or not kind.strip():
            raise UsageError(
                f"--summary {text!r} is not METRIC=SUMMARY",
                hint="e.g. --summary val_loss=min --summary acc=at-min:val_loss",
            )
        out[metric.strip()] = kind.strip()
    parse_summary(out)  # unknown kinds: an error now
    return out


def split_names(values: Sequence[str] | None) -> list[str]:
    """Repeatable options that also take comma-separated lists: ``--agg seed,fold``."""
    return [part.strip() for v in values or () for part in v.split(",") if part.strip()]


def cli_table(
    output: str = "output",
    regexes: Sequence[tuple[str, str, str | None]] = (),
    ledger: bool = False,
    *,
    regex: str = ".*",
    concise: bool = True,
    name: bool = False,
    workers: int | None = None,
    summary: dict[str, str] | None = None,
    agg: Sequence[str] | None = None,
    stale: bool = False,
) -> pd.DataFrame:
    """The table of ``output``: params that vary, metrics.json/jsonl, TensorBoard scalars and
    ``regexes`` ((name, pattern, log command or None) each) as metric columns (summarised
    per ``summary``, aggregated over the ``agg`` params), the ledger columns when ``ledger``.

    Problems (missing logs, bad metrics files) are not warned about: they are in
    ``df.attrs["errors"]`` (one line per experiment) for the CLI to show.
    Raises ExamineError (output dir missing, bad pattern), UsageError and LedgerError.
    """
    results = Results(output, regexes=regexes, workers=workers, regex=regex)
    options: dict[str, Any] = {"summary": summary, "agg": list(agg) if agg else None, "stale": stale}
    return results.table(ledger=ledger, name=name, concise=concise, **options)
