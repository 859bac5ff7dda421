"""``mlrunner table`` and ``mlrunner diff``: thin renderers over :mod:`mlrunner.examine`.

pandas (through mlrunner.examine) and rich are imported inside the commands only.
"""

import json
import shutil
import sys
from typing import Annotated, Any

import typer

from mlrunner.errors import MlrunnerError

OutputOpt = Annotated[str, typer.Option("-o", "--output", help="Output root of the experiments.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fail(exc: MlrunnerError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


def table_command(
    output: OutputOpt = "output",
    regex: Annotated[
        list[str] | None,
        typer.Option("--regex", help="NAME=PATTERN: a metric from the last match of group 1 in the logs."),
    ] = None,
    log: Annotated[
        list[str] | None,
        typer.Option("--log", help="The command whose latest log each --regex reads (default: every log)."),
    ] = None,
    ledger: Annotated[
        bool, typer.Option("--ledger", help="Join status, commit, duration, env from the ledger.")
    ] = False,
    summary: Annotated[
        list[str] | None,
        typer.Option(
            "--summary",
            help="METRIC=min|max|mean|first|last|at-min:OTHER|at-max:OTHER: a summary of its history.",
        ),
    ] = None,
    agg: Annotated[
        list[str] | None,
        typer.Option("--agg", help="Aggregate over these params (e.g. seed): mean, std, sem per group."),
    ] = None,
    stale: Annotated[
        bool, typer.Option("--stale", help="Add _stale (code changed since) and _env_changed.")
    ] = False,
    columns: Annotated[
        list[str] | None,
        typer.Option(
            "--columns", help="Only these columns, in this order (comma-separated; globs: 'val_*')."
        ),
    ] = None,
    sort: Annotated[
        str | None, typer.Option("--sort", help="Sort by this column; -COL or COL:desc for descending.")
    ] = None,
    name: Annotated[
        bool | None,
        typer.Option("--name/--no-name", help="The experiment's dir name first (default: on in a terminal)."),
    ] = None,
    wide: Annotated[
        bool, typer.Option("--wide", help="In a terminal, every ledger column, even past the width.")
    ] = False,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV (every column).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The Examiner's table of every experiment under OUTPUT, in the terminal."""
    terminal = sys.stdout.isatty() and not csv and not as_json
    show_name = (terminal and not agg) if name is None else name  # --agg --name: each group's members
    try:
        from mlrunner.cli import tableview
        from mlrunner.examine import (
            cli_table,
            parse_regex_options,
            parse_summary_options,
            records,
            split_names,
        )

        df = cli_table(
            output,
            parse_regex_options(regex or [], log or []),
            ledger,
            name=show_name,
            summary=parse_summary_options(summary or []),
            agg=split_names(agg) or None,
            stale=stale,
        )
        if sort is not None and len(df):
            column, ascending = tableview.sort_spec(sort, list(df.columns))
            df = _sorted(df, column, ascending)
        if columns:
            keep = ["_name"] if show_name else []
            df = df[tableview.pick_columns(list(df.columns), split_names(columns), keep)]
    except MlrunnerError as exc:
        _fail(exc)
        return
    for problem in [*df.attrs.get("errors", []), *df.attrs.get("notes", [])]:
        typer.echo(f"WARNING: {problem}", err=True)
    if csv:
        typer.echo(df.to_csv(index=False), nl=False)
        return
    if as_json:
        typer.echo(json.dumps(records(df), indent=2, default=str))
        return
    headers = [str(c) for c in df.columns]
    rows = tableview.text_rows(list(df.columns), list(df.itertuples(index=False, name=None)))
    if not terminal:  # piped: aligned plain text, every column, nothing wrapped
        from mlrunner.cli.tables import plain_table

        typer.echo(plain_table(headers, rows) if rows else "(no experiments)")
        return
    width = shutil.get_terminal_size().columns
    shown, hidden = (
        (list(range(len(headers))), []) if wide or columns else tableview.fit_width(headers, rows, width)
    )
    _print_rich(
        f"Experiments under {output}", [headers[i] for i in shown], [[r[i] for i in shown] for r in rows]
    )
    if hidden:
        typer.echo(
            f"({len(hidden)} more ledger columns: {', '.join(hidden)}; --wide or --columns shows them, "
            "--csv/--json have every column)",
            err=True,
        )


def _sorted(df: Any, column: Any, ascending: bool) -> Any:
    try:
        return df.sort_values(column, ascending=ascending, na_position="last", kind="stable")
    except TypeError:  # mixed types: sort by their text
        return df.sort_values(
            column, ascending=ascending, na_position="last", kind="stable", key=lambda s: s.astype(str)
        )


def _print_rich(title: str, headers: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title))
    for col in headers:
        table.add_column(Text(col), overflow="fold")
    for row in rows:
        table.add_row(*[Text(c) for c in row])  # Text: a value's [brackets] are not markup
    Console().print(table)


def diff_command(
    exp_a: Annotated[str, typer.Argument(help="An experiment: its dir name under OUTPUT, or its path.")],
    exp_b: Annotated[str, typer.Argument(help="The experiment to compare it with.")],
    output: OutputOpt = "output",
    code: Annotated[bool, typer.Option("--code", help="Also the unified diff of the code.")] = False,
    summary: Annotated[
        list[str] | None, typer.Option("--summary", help="METRIC=KIND, as for `mlrunner table` (repeatable).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """What differs between two experiments: params, commands, code, environment, metrics."""
    try:
        from mlrunner.examine import Results, parse_summary_options

        doc = Results(output).diff(exp_a, exp_b, code=code, summary=parse_summary_options(summary or []))
    except MlrunnerError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    typer.echo(render_diff(doc, code))


def _v(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, float):
        return f"{value:.6g}"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def render_diff(doc: dict[str, Any], code: bool) -> str:
    """The diff document as text: one section per kind of difference."""
    a, b = doc["experiments"]
    lines = [f"a: {a}", f"b: {b}"]
    sections = [k for k in ("params", "commands", "code", "env", "metrics") if k in doc]
    if not sections:
        lines.append("no difference in params, commands, code, environment or metrics")
    for key in ("params", "commands", "metrics"):
        if key in doc:
            lines.append(f"{key}:")
            for name, (va, vb) in doc[key].items():
                lines.append(f"  {name}: {_v(va)} -> {_v(vb)}")
    if "code" in doc:
        section = doc["code"]
        if section.get("error"):
            lines.append(f"code: differs, but {section['error']}")
        else:
            files = section["files"] or []
            lines.append(f"code: {len(files)} file(s) differ" + ("" if code else " (--code shows the diff)"))
            lines.extend(f"  {f['status']} {f['path']}" for f in files)
            if code and section.get("patch"):
                lines.append(section["patch"].rstrip("\n"))
    if "env" in doc:
        env = doc["env"]
        lines.append("env:")
        for pkg, (va, vb) in env.get("packages", {}).items():
            lines.append(f"  package {pkg}: {_v(va)} -> {_v(vb)}")
        for key, value in env.items():
            if key != "packages":
                shown = value if isinstance(value, str) else f"{_v(value[0])} -> {_v(value[1])}"
                lines.append(f"  {key}: {shown}")
    return "\n".join(lines)
