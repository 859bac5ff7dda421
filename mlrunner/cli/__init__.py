"""The command line: typer apps (``app``) and the terminal renderers (``render``).
Nothing imports this package but the console scripts.

The entry points import the CLI themselves, so that a Ctrl-C while it loads (the first
~0.1 s) exits 130 quietly instead of printing a KeyboardInterrupt traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    """The ``mlrunner`` console script."""
    try:
        from mlrunner.cli.app import main as _main

        _main()
    except KeyboardInterrupt:
        sys.exit(130)


def run_main() -> None:
    """The ``run`` console script (0.5.9's entry point)."""
    try:
        from mlrunner.cli.app import run_main as _run_main

        _run_main()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["main", "run_main"]
