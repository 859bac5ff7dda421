"""Examine experiment results: ``from mlrunner.examine import Examiner, latest_log``.

Imports pandas: import this package lazily from anything the CLI loads at start-up.
"""

from mlrunner.examine.cli import cli_table, parse_regex_options
from mlrunner.examine.dirs import Experiment, latest_log
from mlrunner.examine.examiner import Examiner, ExamineWarning
from mlrunner.examine.parsers import RegexParser
from mlrunner.examine.table import records

__all__ = [
    "Examiner",
    "ExamineWarning",
    "Experiment",
    "RegexParser",
    "cli_table",
    "latest_log",
    "parse_regex_options",
    "records",
]
