"""``mlrunner failures``: a run's failed commands grouped by what went wrong, each group
with its count, experiments, one log tail and the command that reruns just that group
(over :func:`mlrunner.ledger.triage.failures_doc`). Imports inside the command: every
``mlrunner`` invocation imports this module."""

import json
from typing import Annotated, Any

import typer

from mlrunner.errors import MlrunnerError, UsageError

TAIL_SHOWN = 10  # log lines shown per group (--json has the whole stored tail)
NAMES_SHOWN = 8  # experiment names listed per group before "and N more"


def _fail(exc: MlrunnerError) -> None:
    try:
        typer.echo(f"error: {exc}", err=True)
    except OSError:
        pass
    raise typer.Exit(exc.exit_code)


def failures_command(
    run: Annotated[
        int | None,
        typer.Argument(help="The run (see `mlrunner ledger ls`); default: the latest.", show_default=False),
    ] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="Output root of the experiments.")] = "output",
    as_json: Annotated[
        bool,
        typer.Option("--json", help='A list of {"signature", "count", "experiments", "log_tail", "rerun"}.'),
    ] = False,
) -> None:
    """A run's failed commands grouped by signature (exception, CUDA OOM, timeout, signal, exit
    code): count, experiments, a log tail, and the command that reruns just that group."""
    from mlrunner.ledger import Ledger
    from mlrunner.ledger.triage import failures_doc

    try:
        with Ledger(output, create=False) as ledger:
            row = ledger.get_run(run)
            if row is None:
                which = f"no run {run}" if run is not None else "no run yet"
                raise UsageError(f"{which} under '{output}'", hint="`mlrunner ledger ls` lists the runs")
            run_id = int(row["id"])
            groups = failures_doc(ledger, run_id, output)
    except MlrunnerError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(groups, indent=2))
        return
    typer.echo("\n".join(failures_lines(groups, run_id, output)))


def failures_lines(groups: list[dict[str, Any]], run_id: int, output: str) -> list[str]:
    """The groups as text: a heading per signature, its experiments, log lines, rerun."""
    from mlrunner.cli.render import TAIL_INDENT
    from mlrunner.logtext import clean_line, tail_lines

    if not groups:
        return [f"No failed command in run {run_id} under {output}."]
    n = sum(g["count"] for g in groups)
    lines = [
        f"Run {run_id} under {output}: {n} failed command{'s' * (n != 1)}, "
        f"{len(groups)} signature{'s' * (len(groups) != 1)}"
    ]
    for g in groups:
        names = g["experiments"]
        shown = ", ".join(names[:NAMES_SHOWN])
        if len(names) > NAMES_SHOWN:
            shown += f" and {len(names) - NAMES_SHOWN} more"
        lines += ["", f"{clean_line(g['signature'])}  ({g['count']} command{'s' * (g['count'] != 1)})"]
        lines.append(f"  experiments: {shown}")
        tail = tail_lines(g["log_tail"], TAIL_SHOWN)
        if tail:
            lines.append(f"  log of {names[0]}:")
            lines += [TAIL_INDENT + line for line in tail]
        lines.append(f"  rerun: {g['rerun']}")
    return lines
