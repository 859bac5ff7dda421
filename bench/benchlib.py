"""Shared helpers of the benchmark suite: timing, statistics, summary rows, baselines.

Every figure is the median of several repetitions with its min-max, because the
machine is shared and noisy; baselines are measured in the same run, interleaved with
the subject. A baseline that cannot be obtained is reported as skipped, never faked.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
CACHE_ENV = "MLRUNNER_BENCH_CACHE"
OLD_VERSION = "0.5.9"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def cache_dir() -> Path:
    """Where built fixtures and the 0.5.9 venv are kept: $MLRUNNER_BENCH_CACHE or bench/.cache."""
    return Path(os.environ.get(CACHE_ENV) or BENCH_DIR / ".cache")


class BenchError(RuntimeError):
    """A benchmarked command failed: its figures would be meaningless."""


@dataclass
class Sample:
    """Repeated measurements of one thing, in seconds."""

    times: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.times.append(seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def lo(self) -> float:
        return min(self.times)

    @property
    def hi(self) -> float:
        return max(self.times)

    def fmt(self, scale: float = 1.0, unit: str = "s", digits: int = 3) -> str:
        """'median (min-max) unit', scaled (1000 for ms)."""
        if not self.times:
            return "-"
        m, lo, hi = self.median * scale, self.lo * scale, self.hi * scale
        return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f}) {unit}".rstrip()


@dataclass
class Row:
    """One line of the summary table."""

    metric: str
    ours: str
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    verdict: str = "-"  # PASS, MISS, skipped, failed or '-' (information only)


def verdict(ok: bool | None) -> str:
    if ok is None:
        return "-"
    return "PASS" if ok else "MISS"


def ratio(a: float, b: float) -> str:
    """a / b as '1.23x' (two significant digits below 0.1)."""
    if b <= 0:
        return "-"
    r = a / b
    return f"{r:.2g}x" if r < 0.1 else f"{r:.2f}x"


def timed_run(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    stdin_text: str | None = None,
    stdout: int | None = subprocess.DEVNULL,
    timeout: float = 1800,
) -> float:
    """Run ``argv`` to completion; its wall time in seconds. BenchError unless it exits 0."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        list(argv),
        cwd=cwd,
        env=env,
        input=stdin_text,
        text=True,
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=timeout,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-8:])
        raise BenchError(f"{' '.join(map(str, argv))} exited {proc.returncode} in {cwd}:\n{tail}")
    return wall


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without PYTHONPATH (so an old venv never imports this checkout)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(GIT_ENV)
    env.update(extra)
    return env


def our_script(name: str) -> str:
    """The console script ``name`` of this interpreter (not a pyenv shim, which adds ~50 ms)."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"console script '{name}' not found: pip install -e . first")
    return found


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, env=clean_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()}")
    return proc.stdout


def make_repo(repo: Path, files: dict[str, str]) -> None:
    """A git repo at ``repo`` with ``files`` committed."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q")
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "-c", "gc.auto=0", "commit", "-q", "-m", "bench")


def find_old(install: bool) -> tuple[Path | None, str]:
    """The venv of mlrunner 0.5.9 (bin/run, bin/python), or None and why it is skipped.

    Looks in /tmp/old, then bench/.cache/; with ``install`` creates the cached venv with
    ``python -m venv`` + ``pip install mlrunner==0.5.9``.
    """
    candidates = (Path("/tmp/old"), cache_dir() / f"mlrunner-{OLD_VERSION}")
    for venv in candidates:
        if (venv / "bin" / "run").is_file() and (venv / "bin" / "python").is_file():
            return venv, f"mlrunner {OLD_VERSION} in {venv}"
    if not install:
        return None, f"skipped: mlrunner {OLD_VERSION} not installed (no /tmp/old, no bench/.cache venv)"
    venv = candidates[-1]
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300
        )
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"mlrunner=={OLD_VERSION}"],
            check=True,
            capture_output=True,
            timeout=600,
            env=clean_env(),
        )
    except (subprocess.SubprocessError, OSError) as e:
        shutil.rmtree(venv, ignore_errors=True)
        err = getattr(e, "stderr", b"") or b""
        last = err.decode(errors="replace").strip().splitlines()[-1:] if isinstance(err, bytes) else []
        return None, f"skipped: cannot install mlrunner {OLD_VERSION} ({type(e).__name__} {last})"
    return venv, f"mlrunner {OLD_VERSION} installed in {venv}"


def source_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict[str, str]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "load": load_average(),
    }


def print_rows(rows: Sequence[Row], file: object = None) -> None:
    """The rows as an aligned text table."""
    header = Row("metric", "ours", "baseline", "ratio", "target", "verdict")
    table = [(r.metric, r.ours, r.baseline, r.ratio, r.target, r.verdict) for r in [header, *rows]]
    cols = list(zip(*table, strict=True))
    widths = [max(len(c) for c in col) for col in cols]
    out = file or sys.stdout
    for i, r in enumerate([header, *rows]):
        cells = (r.metric, r.ours, r.baseline, r.ratio, r.target, r.verdict)
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip(), file=out)
        if i == 0:
            print("  ".join("-" * w for w in widths), file=out)


def markdown_rows(rows: Sequence[Row]) -> str:
    lines = [
        "| metric | ours | baseline | ratio | target | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        cells = (r.metric, r.ours, r.baseline, r.ratio, r.target, r.verdict)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
