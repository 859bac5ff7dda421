"""``mlrunner report``: the UI's views as one self-contained HTML file: the styles, Plotly.js
(from the installed ``plotly``), the scripts and every datum inline, so it opens anywhere
with no network (its Content-Security-Policy allows none).

What the report holds: the runs and each run's board (tasks, commands, every attempt),
the experiments table (default summaries), every history (at most :data:`MAX_POINTS`
points a series, evenly thinned), and each experiment's detail (params, commands,
attempts, git snapshot and patch, environment, and the last :data:`LOG_TAIL` bytes of each
command's latest log). Environments and patches shared by many experiments are stored once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from mlrunner import snapshot as gitsnap
from mlrunner.errors import UsageError
from mlrunner.ui import assets, board, pages
from mlrunner.ui.data import PATCH_MAX, UiData, dumps
from mlrunner.ui.files import NotFound, latest_log_path, log_piece

MAX_POINTS = 1000
LOG_TAIL = 4096


def _thin(series: dict[str, Any]) -> dict[str, Any]:
    n = len(series["step"])
    if n <= MAX_POINTS:
        return series
    keep = sorted({round(i * (n - 1) / (MAX_POINTS - 1)) for i in range(MAX_POINTS)})
    return {**series, "step": [series["step"][i] for i in keep], "value": [series["value"][i] for i in keep]}


class _Shared:
    """Values stored once, referenced by key (environments, patches)."""

    def __init__(self) -> None:
        self.items: dict[str, Any] = {}
        self._by_file: dict[tuple[int, int], str] = {}

    def add(self, value: Any) -> str:
        key = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.items.setdefault(key, value)
        return key

    def add_file(self, path: str, most: int) -> str | None:
        """The text of ``path`` (its first ``most`` bytes), once per file (hard links too)."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        ident = (st.st_dev, st.st_ino)
        if ident not in self._by_file:
            with open(path, "rb") as f:
                data = f.read(most + 1)
            text = data[:most].decode("utf-8", "replace")
            self._by_file[ident] = self.add({"text": text, "truncated": len(data) > most})
        return self._by_file[ident]


def _detail(data: UiData, name: str, row: dict[str, Any], envs: _Shared, patches: _Shared) -> dict[str, Any]:
    from mlrunner.examine import read_experiment

    path = os.path.join(data.output, name)
    exp = read_experiment(path)
    param, commands, env = exp["param"], exp["commands"], exp["env"]
    ledger = data.ledger()
    attempts = {} if ledger is None else board.experiment_attempts(ledger, path)
    names = list(commands) + [c for c in attempts if c not in commands]
    logs: dict[str, Any] = {}
    for command in names:
        recorded = attempts[command][-1].get("log_path") if attempts.get(command) else None
        try:
            piece = log_piece(latest_log_path(data.output, name, command, recorded), tail=LOG_TAIL)
            logs[command] = {"name": piece.name, "start": piece.start, "size": piece.size,
                             "text": piece.read().decode("utf-8", "replace")}  # fmt: skip
        except (NotFound, OSError):
            pass
    return {
        "name": name,
        "params": exp["params"],
        "commands": commands,
        "command_names": names,
        "metrics": {k: v for k, v in row.items() if k not in param and k != "_name"},
        "env_ref": None if env is None else envs.add(env),
        "git": exp["git"],
        "patch_ref": patches.add_file(os.path.join(path, gitsnap.PATCH_NAME), PATCH_MAX),
        "attempts": attempts,
        "log_tails": logs,
        "files": sorted(os.listdir(path)),
    }


def report_data(data: UiData) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able document."""
    runs = data.runs()
    table = data.table(max_age=0)
    rows: list[dict[str, Any]] = json.loads(table.body)
    curves: dict[str, Any] = {}
    for metric in table.meta["history_metrics"]:
        got = data.curves(metric)
        curves[metric] = {**got, "series": [_thin(s) for s in got["series"]]}
    envs, patches = _Shared(), _Shared()
    details = {row["_name"]: _detail(data, row["_name"], row, envs, patches) for row in rows}
    return {
        "output": data.output,
        "generated_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "runs": runs,
        "run_docs": {str(r["id"]): data.run(r["id"]) for r in runs},
        "attempts": {str(r["id"]): data.run_attempts(r["id"]) for r in runs},
        "rows": rows,
        "columns": table.meta,
        "curves": curves,
        "details": details,
        "envs": envs.items,
        "patches": patches.items,
    }


def write_report(output: str | os.PathLike[str], dest: str | os.PathLike[str]) -> int:
    """Write the report of ``output`` to ``dest`` (replaced atomically); its size in bytes."""
    assets.require(assets.REPORT_PACKAGES, "mlrunner report")
    dest = os.fspath(dest)
    folder = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(folder):
        raise UsageError(f"cannot write '{dest}': folder '{folder}' does not exist", key="--out")
    data = UiData(output, fresh_s=0)
    try:
        doc = report_data(data)
    finally:
        data.close()
    text = pages.report_page(os.fspath(output), dumps(doc).decode())
    tmp = f"{dest}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, dest)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UsageError(f"cannot write '{dest}': {exc.strerror}", key="--out") from None
    return len(text.encode())
