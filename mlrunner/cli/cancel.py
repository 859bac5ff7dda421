"""``mlrunner cancel``: stop some experiments of a running sweep from another terminal."""

from typing import Annotated

import typer

from mlrunner.errors import MlrunnerError


def cancel_command(
    experiments: Annotated[
        list[str] | None,
        typer.Argument(help="Experiments to cancel: their names (dir names) or dirs.", show_default=False),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", help="Cancel the experiments whose PARAM=VALUE (repeatable: all must hold)."),
    ] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="Output root of the experiments.")] = "output",
    grace: Annotated[
        float,
        typer.Option(
            "--grace", min=0.0, help="For commands without a runner: seconds from SIGTERM to SIGKILL."
        ),
    ] = 10.0,
) -> None:
    """Stop the running and queued commands of some experiments (recorded cancelled); the rest
    of the sweep goes on, and `run --resume` reruns them."""
    from mlrunner.ledger import Ledger
    from mlrunner.run.cancel import cancel, match_tasks

    try:
        with Ledger(output, create=False) as ledger:
            tasks = match_tasks(ledger, list(experiments or ()), list(where or ()))
            report = cancel(ledger, tasks, grace=grace)
    except MlrunnerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    if not report.tasks:
        typer.echo("No experiment matches: nothing cancelled.")
        raise typer.Exit(1)
    typer.echo(f"Cancel asked for {len(report.tasks)} experiment(s): {', '.join(report.tasks)}")
    if report.with_runner:
        typer.echo("their runner stops the running ones within a second (SIGTERM, SIGKILL after its grace)")
    for what in report.stopped_here:
        typer.echo(f"stopped {what} (its runner had died); recorded cancelled")
    typer.echo(f"`run --resume -o {output}` reruns them.")
