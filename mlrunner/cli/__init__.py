"""The command line: typer apps (``app``) and the terminal renderers (``render``).
Nothing imports this package but the console scripts."""

from mlrunner.cli.app import main, run_main

__all__ = ["main", "run_main"]
