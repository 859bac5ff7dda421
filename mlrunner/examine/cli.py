"""What ``mlrunner table`` needs: the table of an output dir, built without a notebook.

The CLI parses its options, calls :func:`cli_table` and renders the DataFrame (a rich
table, CSV, or JSON through :func:`mlrunner.examine.table.records`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import pandas as pd

from mlrunner.errors import UsageError
from mlrunner.examine.examiner import Examiner, ExamineWarning


def parse_regex_options(regexes: Sequence[str], logs: Sequence[str]) -> list[tuple[str, str, str]]:
    """``--regex NAME=PATTERN`` values paired with ``--log CMD`` values.

    Pairing: no ``--log`` -> every regex reads the ``test`` log; one ``--log`` -> all
    regexes read it; otherwise one ``--log`` per ``--regex``, in order.
    """
    if logs and len(logs) not in (1, len(regexes)):
        raise UsageError(
            f"{len(regexes)} --regex but {len(logs)} --log options",
            hint="give one --log for all regexes, or one --log after each --regex",
        )
    out = []
    for i, text in enumerate(regexes):
        name, sep, pattern = text.partition("=")
        if not sep or not name.strip() or not pattern:
            raise UsageError(
                f"--regex {text!r} is not NAME=PATTERN",
                hint=r"e.g. --regex 'bleu=BLEU4 = ([\d.]+)' --log test (group 1 is the value)",
            )
        log = logs[0] if len(logs) == 1 else logs[i] if logs else "test"
        out.append((name.strip(), pattern, log))
    return out


def cli_table(
    output: str = "output",
    regexes: Sequence[tuple[str, str, str]] = (),
    ledger: bool = False,
    *,
    regex: str = ".*",
    concise: bool = True,
    name: bool = False,
    workers: int | None = None,
) -> pd.DataFrame:
    """The table of ``output``: params that vary, metrics.json/jsonl and ``regexes``
    ((name, pattern, log command) each) as metric columns, the ledger columns when ``ledger``.

    Problems (missing logs, bad metrics files) are not warned about: they are in
    ``df.attrs["errors"]`` (one line per experiment) for the CLI to show.
    Raises ExamineError (output dir missing, bad pattern) and LedgerError.
    """
    examiner = Examiner()
    for metric, pattern, log in regexes:
        examiner.add_regex(metric, pattern, log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExamineWarning)
        examiner.exam(output, regex, workers=workers if workers is not None else (os.cpu_count() or 1))
    df = examiner.table(concise=concise, ledger=ledger, name=name)
    df.attrs["errors"] = examiner.errors
    return df
