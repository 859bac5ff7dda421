"""``mlrunner ledger recover``: rebuild a lost or damaged ledger from the experiment dirs."""

from typing import Annotated

import typer

from mlrunner.errors import MlrunnerError


def recover_command(
    output: Annotated[str, typer.Option("-o", "--output", help="Output root of the experiments.")] = "output",
) -> None:
    """Rebuild the ledger of OUTPUT from its last backup and its experiment dirs (param, stat,
    logs, exit files); the damaged file is kept beside it."""
    import os

    from mlrunner.run.recover import recover_ledger

    if not os.path.isdir(output):
        typer.echo(f"error: no output dir '{output}'", err=True)
        raise typer.Exit(2)
    try:
        report = recover_ledger(output)
    except MlrunnerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    for kept in report.kept:
        typer.echo(f"kept the damaged file as {kept}")
    if report.backup:
        typer.echo(f"started from the last backup, {report.backup}")
    typer.echo(
        f"recovered from the experiment dirs: {report.runs} run(s), {report.tasks} task(s), "
        f"{report.attempts} attempt(s)"
    )
    if report.problems:
        typer.echo(f"not recovered, or recovered with a guess ({len(report.problems)}):")
        for problem in report.problems[:50]:
            typer.echo(f"  {problem}")
        if len(report.problems) > 50:
            typer.echo(f"  ... and {len(report.problems) - 50} more")
