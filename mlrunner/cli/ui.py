"""``mlrunner ui`` and ``mlrunner report``: the web view of an output root, served or as
one HTML file. mlrunner.ui (and its optional packages, ``mlrunner[ui]``) are imported
inside the commands only."""

from typing import TYPE_CHECKING, Annotated

import typer

from mlrunner.errors import MlrunnerError

if TYPE_CHECKING:
    from mlrunner.ui import Serving

OutputOpt = Annotated[str, typer.Option("-o", "--output", help="Output root of the experiments.")]


def _fail(exc: MlrunnerError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


def ui_command(
    output: OutputOpt = "output",
    host: Annotated[
        str, typer.Option("--host", help="Address to serve on (default: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to serve on; 0 picks a free one.")] = 8765,
) -> None:
    """Serve a read-only web view of OUTPUT (runs, live board, experiments, plots, logs)."""
    from mlrunner.ui import serve

    def ready(where: "Serving") -> None:
        if where.exposed:
            typer.echo(
                f"WARNING: serving on {where.host}, not only this machine: anyone who can reach it on "
                f"port {where.port} can read every log, param and patch under {output}",
                err=True,
            )
        for note in where.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(f"mlrunner ui: {output} at {where.url}  (Ctrl-C stops)", err=False)

    try:
        serve(output, host, port, on_ready=ready)
    except MlrunnerError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        pass
    typer.echo("mlrunner ui: stopped")


def report_command(
    output: OutputOpt = "output",
    out: Annotated[str, typer.Option("--out", help="The HTML file to write.")] = "report.html",
) -> None:
    """Write the web view of OUTPUT as one self-contained HTML file (opens with no network)."""
    from mlrunner.ui import write_report

    try:
        size = write_report(output, out)
    except MlrunnerError as exc:
        _fail(exc)
        return
    typer.echo(f"Wrote {out} ({size / 1e6:.1f} MB): open it in a browser, no server or network needed.")
