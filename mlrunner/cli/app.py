"""Command line: ``run`` (0.5.9's entry point) and ``mlrunner`` (run, ledger, status, ...).

Parse, call the core, render. Heavy modules (pandas, GitPython, submitit, rich) are
imported inside the commands that need them so ``run --help`` and ``mlrunner ledger ls``
start fast. The command modules keep their annotations evaluated (no
``from __future__ import annotations``): typer reads every command's signature at
start-up, and string annotations cost it a compile and an eval each.
"""

import gc
import json
import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlrunner.cli import cancel, failures, recover, results, ui
from mlrunner.errors import MlrunnerError, UsageError

if TYPE_CHECKING:
    from mlrunner.cli.console import ConsoleLog, ConsoleStream
    from mlrunner.cli.live import LiveRenderer
    from mlrunner.cli.render import JsonRenderer, PlainRenderer

HELP = "Run a LOT of machine-learning experiments on a pool of GPUs, and never lose track of one."

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
ledger_app = typer.Typer(
    help="Inspect the ledger: every run, task, command and attempt.", no_args_is_help=True
)
app.add_typer(ledger_app, name="ledger")

OutputOpt = Annotated[str, typer.Option("-o", "--output", help="Output root of the experiments.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fail(exc: MlrunnerError) -> None:
    try:
        typer.echo(f"error: {exc}", err=True)
    except OSError:  # stderr is gone (a closed pipe, a dropped session): the exit status says it
        pass
    raise typer.Exit(exc.exit_code)


def _split_resources(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out: list[str] = []
    for v in values:
        out.extend(v.split())
    return out


def _slurm_overrides(values: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in values or []:
        if "=" not in v:
            raise UsageError(
                f"'--slurm {v}' is not KEY=VALUE", key="--slurm", hint="e.g. --slurm partition=gpu"
            )
        k, _, val = v.partition("=")
        import yaml

        out[k.strip()] = yaml.safe_load(val) if val else val
    return out


def run_command(
    ctx: typer.Context,
    yaml_path: Annotated[str, typer.Option("-y", "--yaml", help="The params.yaml to run.")] = "params.yaml",
    output: OutputOpt = "output",
    title: Annotated[str | None, typer.Option("-t", "--title", help="Only grids with this _title.")] = None,
    command: Annotated[
        list[str] | None, typer.Option("-c", "--command", help="Only these template commands (repeatable).")
    ] = None,
    resource: Annotated[
        list[str] | None,
        typer.Option(
            "-r",
            "--resource",
            help="Worker slots, overriding params.yaml: -r 0,1 -r 2,3 (two 2-GPU slots), -r '0 1', -r auto.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("-f", "--force", help="Rerun commands that already finished.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print every task and command; write nothing.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("-d", "--debug", help="Run the first task only, output also to the terminal.")
    ] = False,
    sample: Annotated[
        int | None, typer.Option("--sample", help="Run a random subset of N tasks per grid.")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Seed of every random draw (--sample, _samples, shuffles); default: chosen, printed.",
        ),
    ] = None,
    order: Annotated[
        str | None,
        typer.Option("--order", help="Task order in each grid: document (default) or shuffle (seeded)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --dry-run: the tasks as one JSON array (and their status).")
    ] = False,
    max_tasks: Annotated[
        int | None,
        typer.Option("--max-tasks", min=1, help="Refuse sweeps of more tasks than this (default 1,000,000)."),
    ] = None,
    allow_orphans: Annotated[
        bool,
        typer.Option("--allow-orphans", help="Run even when a param no command uses resembles one they use."),
    ] = False,
    no_subdir: Annotated[
        bool, typer.Option("--no-subdir", help="Write every experiment into the output root itself.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Finish exactly what is unfinished in the latest run (or RUN_ID)."),
    ] = False,
    run_id: Annotated[
        int | None, typer.Argument(help="With --resume: the run to resume.", show_default=False)
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Only the experiments with this name (a dir name; repeatable)."),
    ] = None,
    retries: Annotated[
        int, typer.Option("--retries", min=0, help="Retry a failed command up to N times.")
    ] = 0,
    grace: Annotated[
        float, typer.Option("--grace", min=0.0, help="Seconds between SIGTERM and SIGKILL when stopping.")
    ] = 10.0,
    timeout: Annotated[
        list[str] | None,
        typer.Option(
            "--timeout",
            help="Stop a command past this time (90s, 10m, 6h, 1d), recorded timeout; CMD=DURATION for one "
            "command (repeatable). Overrides params.yaml's timeout:.",
        ),
    ] = None,
    stall: Annotated[
        str | None,
        typer.Option(
            "--stall", help="Stop a command whose log has not grown for this long (recorded stalled)."
        ),
    ] = None,
    isolate: Annotated[
        bool, typer.Option("--isolate", help="Run every command in a snapshot worktree of the code.")
    ] = False,
    backend: Annotated[str, typer.Option("--backend", help="Where commands run: local or slurm.")] = "local",
    detach: Annotated[
        bool, typer.Option("--detach", help="Slurm: on Ctrl-C leave submitted jobs running.")
    ] = False,
    slurm: Annotated[
        list[str] | None, typer.Option("--slurm", help="Override a slurm: setting, KEY=VALUE (repeatable).")
    ] = None,
) -> None:
    """Run every task of params.yaml (each grid's param combinations) on the worker slots."""
    from mlrunner.run import Runner, RunRequest

    try:
        if run_id is not None and not resume:
            raise UsageError(
                f"unexpected argument '{run_id}'", hint="a run id goes with --resume: run --resume RUN_ID"
            )
        if as_json and not dry_run:
            raise UsageError("--json goes with --dry-run", key="--json", hint="run --dry-run --json")
        req = RunRequest(
            params_path=yaml_path,
            output=output,
            title=title,
            commands=tuple(command) if command else None,
            resources=_tuple(_split_resources(resource)),
            force=force,
            dry_run=dry_run,
            debug=debug,
            sample=sample,
            seed=seed,
            order=order,
            max_tasks=max_tasks,
            allow_orphans=allow_orphans,
            json=as_json,
            no_subdir=no_subdir,
            retries=retries,
            grace=grace,
            timeout=tuple(timeout) if timeout else None,
            stall=stall,
            isolate=isolate,
            backend=backend,
            detach=detach,
            slurm=_slurm_overrides(slurm),
            resume=resume,
            run_id=run_id,
            only=_tuple(only),
            argv=tuple(sys.argv),
            cwd=os.getcwd(),
            given=_given(ctx),
        )
        ask = _ask_detach if backend == "slurm" and not detach and sys.stdin.isatty() else None
        from mlrunner.cli.console import ConsoleLog, ConsoleStream

        log = None if dry_run else ConsoleLog()
        out, err = ConsoleStream(sys.stdout, log), ConsoleStream(sys.stderr, log)
        renderer = _renderer(output, dry_run, as_json, out, err, log)
        # Start-up's objects (typer, click, yaml...) live as long as the process: keep the
        # garbage collector from scanning them again during a sweep of many short commands.
        gc.freeze()
        try:
            summary = Runner(req, renderer, ask_detach=ask).run()
        finally:
            renderer.close()
            for stream in (out, err):
                stream.close()
            if log is not None:
                log.close()
            _quiet_broken(out, err)
    except MlrunnerError as exc:
        _fail(exc)
        return
    raise typer.Exit(summary.exit_code)


def _quiet_broken(*streams: "ConsoleStream") -> None:
    """A console that broke during the run (``| head``, a dropped ssh session) stays quiet
    until the end: its descriptor goes to /dev/null, so nothing fails at exit."""
    for stream in streams:
        if stream.broken:
            try:
                fd = os.open(os.devnull, os.O_WRONLY)
                os.dup2(fd, stream.fileno())
                os.close(fd)
            except (OSError, ValueError):
                pass


# run_command's parameters that are not named as the RunRequest fields they fill
_FIELD_OF = {"yaml_path": "params_path", "command": "commands", "resource": "resources", "as_json": "json"}


def _given(ctx: typer.Context) -> frozenset[str]:
    """The RunRequest fields whose options the user gave (command line or environment),
    as opposed to left at their default: on resume those override the stored run's."""
    explicit = {"COMMANDLINE", "ENVIRONMENT", "PROMPT"}  # click's ParameterSource names

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name in explicit

    return frozenset(_FIELD_OF.get(name, name) for name in ctx.params if given(name))


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values is not None else None


def _ask_detach() -> bool:
    """On Ctrl-C under Slurm, at a terminal: True leaves the submitted jobs running."""
    return not typer.confirm("\nCancel the submitted Slurm jobs?", default=True, err=True)


def _renderer(
    output: str,
    dry_run: bool,
    as_json: bool,
    out: "ConsoleStream",
    err: "ConsoleStream",
    log: "ConsoleLog | None",
) -> "LiveRenderer | PlainRenderer | JsonRenderer":
    from mlrunner.cli.live import LiveRenderer
    from mlrunner.cli.render import JsonRenderer, PlainRenderer

    if as_json:
        return JsonRenderer(out, err)
    if out.isatty() and not dry_run and os.environ.get("MLRUNNER_PLAIN") != "1":
        return LiveRenderer(output, out, err, log)
    return PlainRenderer(output, out, err, log)


app.command("run", help=run_command.__doc__)(run_command)


@app.command("init")
def init_command(
    path: Annotated[str, typer.Argument(help="Where to write the reference params.yaml.")] = "params.yaml",
) -> None:
    """Write the documented reference params.yaml into the current dir (never overwrites)."""
    from importlib.resources import files

    if os.path.exists(path):
        typer.echo(
            f"error: '{path}' already exists; not overwriting it (remove it or pick another path)", err=True
        )
        raise typer.Exit(2)
    text = files("mlrunner").joinpath("data/params.yaml").read_text(encoding="utf-8")
    with open(path, "x", encoding="utf-8") as f:
        f.write(text)
    typer.echo(f"Wrote {path}: edit the templates and grids, then type `run`.")


def _open_ledger(output: str) -> Any:
    from mlrunner.ledger import Ledger

    return Ledger(output, create=False)


@ledger_app.command("ls")
def ledger_ls(output: OutputOpt = "output", as_json: JsonOpt = False) -> None:
    """One row per run: id, start, status, git commit, tasks finished/failed/total."""
    from mlrunner.ledger.views import runs_doc

    try:
        with _open_ledger(output) as ledger:
            runs = runs_doc(ledger)
    except MlrunnerError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(runs, indent=2, default=str))
        return
    headers = ["id", "started", "status", "git", "finished", "skipped", "failed", "tasks", "params"]
    rows = [
        [
            str(r["id"]),
            _time(r.get("started_at")),
            str(r.get("status")),
            (r.get("git_commit") or "-")[:10] + ("*" if r.get("git_dirty") else ""),
            str(r.get("n_finished", 0)),
            str(r.get("n_skipped", 0)),
            str(r.get("n_failed", 0)),
            str(r.get("n_tasks", 0)),
            str(r.get("params_path") or ""),
        ]
        for r in runs
    ]
    _print_table(f"Runs under {output}", headers, rows)


def _print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    """A rich table on a terminal; aligned plain text (and no rich import) otherwise."""
    if not sys.stdout.isatty():
        from mlrunner.cli.tables import plain_table

        typer.echo(plain_table(headers, rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in headers:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _time(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        import time

        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return str(value).replace("T", " ")[:19]


@ledger_app.command("show")
def ledger_show(
    run: Annotated[int, typer.Argument(help="The run id (see `mlrunner ledger ls`).")],
    output: OutputOpt = "output",
    as_json: JsonOpt = False,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only tasks with this status (failed, finished, pending, ...)."),
    ] = None,
) -> None:
    """The tasks of one run, each command's status, exit code, attempts and log."""
    from mlrunner.ledger.views import run_doc
    from mlrunner.status import AttemptStatus, TaskStatus

    try:
        with _open_ledger(output) as ledger:
            if ledger.get_run(run) is None:
                raise UsageError(f"no run {run} under '{output}'", hint="`mlrunner ledger ls` lists the runs")
            doc = run_doc(ledger, run, status=status)
    except MlrunnerError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    r = doc["run"]
    rows = []
    for t in doc["tasks"]:
        for i, c in enumerate(t["commands"]):
            rows.append(
                [
                    t["name"] if i == 0 else "",
                    c["name"],
                    c["status"] + (f" ({c['failure_class']})" if c.get("failure_class") else ""),
                    "" if c.get("exit_code") is None else str(c["exit_code"]),
                    str(c.get("attempts", 0)),
                    str(c.get("resource") or ""),
                    str(c.get("log") or ""),
                ]
            )
    headers = ["task", "command", "status", "exit", "attempts", "gpu", "log"]
    _print_table(f"Run {r.get('id')} ({r.get('status')}) under {output}", headers, rows)
    quiet = (AttemptStatus.FINISHED, TaskStatus.PENDING, AttemptStatus.RUNNING)  # no log tail shown
    for t in doc["tasks"]:
        for c in t["commands"]:
            if c["status"] not in quiet and c.get("log_tail"):
                typer.echo(f"\n--- {t['name']} / {c['name']}: last lines of the log ---")
                typer.echo("\n".join(c["log_tail"].rstrip().splitlines()[-10:]))


@app.command("status")
def status_command(output: OutputOpt = "output", as_json: JsonOpt = False) -> None:
    """What a running sweep is doing now: each live command, elapsed time, overall progress."""
    import time

    from mlrunner.ledger.views import live_doc

    try:
        with _open_ledger(output) as ledger:
            doc = live_doc(ledger)
    except MlrunnerError as exc:
        _fail(exc)
        return
    live, active, orphaned = doc["live"], doc["runs"], doc["orphaned"]
    for stopped in doc["stopped"]:
        typer.echo(f"runner {stopped}")
    if as_json:
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    if not live and not active and not orphaned:
        typer.echo(f"Nothing is running under {output}.")
        return
    for r in active:
        typer.echo(
            f"run {r['id']}: {r.get('n_finished', 0)} finished, {r.get('n_failed', 0)} failed, "
            f"{r.get('n_tasks', 0)} tasks"
        )
    now = time.time()
    for a in live:
        started = a.get("started_at")
        elapsed = f"{now - started:.0f}s" if isinstance(started, (int, float)) else str(started)
        typer.echo(f"  {_slot(a.get('resource'))}  {a.get('command')}  {a.get('output_dir')}  {elapsed}")
    if orphaned:
        typer.echo(f"running without a runner (its runner died; `run --resume -o {output}` waits for them):")
    for a in orphaned:
        started = a.get("started_at")
        elapsed = f"{now - started:.0f}s" if isinstance(started, (int, float)) else str(started)
        typer.echo(
            f"  {_slot(a.get('resource'))}  {a.get('command')}  {a.get('output_dir')}  {elapsed}  "
            f"(pid {a.get('pid')}, no runner)"
        )


def _slot(resource: object) -> str:
    """A slot as `status` shows it: 'gpu 0', or 'slot 1' for a CPU slot (cpu:N)."""
    where = str(resource)
    return f"slot {where[4:]}" if where.startswith("cpu:") else f"gpu {where}"


@app.command("restore")
def restore_command(
    experiment_dir: Annotated[str, typer.Argument(help="An experiment dir (holds git.json).")],
    dest: Annotated[str, typer.Argument(help="Where to rebuild the code (must not exist or be empty).")],
    worktree: Annotated[
        bool, typer.Option("--worktree", help="Make DEST a git worktree at the snapshot.")
    ] = False,
) -> None:
    """Rebuild the exact code an experiment ran on, then show its commands."""
    from mlrunner.snapshot import restore

    try:
        result = restore(experiment_dir, dest, worktree=worktree)
    except MlrunnerError as exc:
        _fail(exc)
        return
    for warning in result.warnings:
        typer.echo(f"WARNING: {warning}", err=True)
    typer.echo(f"Restored the code of {experiment_dir} into {result.dest} (from the {result.source})")
    if os.path.abspath(result.cwd) != os.path.abspath(result.dest):
        typer.echo(f"The run started in {result.cwd}")
    if result.commands:
        typer.echo("Its commands (run them from there):")
        for name, line in result.commands.items():
            typer.echo(f"  # {name}\n  {line}")


app.command("table")(results.table_command)
app.command("diff")(results.diff_command)
app.command("cancel")(cancel.cancel_command)
ledger_app.command("recover")(recover.recover_command)
app.command("ui")(ui.ui_command)
app.command("report")(ui.report_command)
app.command("failures")(failures.failures_command)


def main() -> None:
    app()


run_app = typer.Typer(add_completion=False, rich_markup_mode=None)
run_app.command(help=run_command.__doc__)(run_command)


def run_main() -> None:
    """The `run` console script: the `run` command on its own (0.5.9's entry point)."""
    run_app()
