"""Examine experiment results: ``from mlrunner.examine import Examiner, latest_log``.

For programs (the CLI, the web UI): :class:`Results` and the functions
:func:`experiments_rows`, :func:`curves`, :func:`diff`, :func:`experiment_detail`,
:func:`read_experiment` return plain data (JSON-able).

Imports pandas: import this package lazily from anything the CLI loads at start-up.
"""

from mlrunner.examine.api import Results, curves, diff, experiment_detail, experiments_rows
from mlrunner.examine.cli import cli_table, parse_regex_options, parse_summary_options, split_names
from mlrunner.examine.diffing import read_experiment
from mlrunner.examine.dirs import Experiment, latest_log
from mlrunner.examine.examiner import Examiner, ExamineWarning
from mlrunner.examine.parsers import RegexParser
from mlrunner.examine.summary import KINDS as SUMMARY_KINDS
from mlrunner.examine.table import records

__all__ = [
    "SUMMARY_KINDS",
    "Examiner",
    "ExamineWarning",
    "Experiment",
    "RegexParser",
    "Results",
    "cli_table",
    "curves",
    "diff",
    "experiment_detail",
    "experiments_rows",
    "latest_log",
    "parse_regex_options",
    "parse_summary_options",
    "read_experiment",
    "records",
    "split_names",
]
