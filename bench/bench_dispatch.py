"""Dispatch benchmark (issue 8, item 1): N trivial commands over W slots.

Subjects, interleaved (the order rotates every repetition) so that all see the same load:

- floor:    bench/floor.py, a Python thread pool running ``bash -c true`` with a log file
            and an atomically written state file per command;
- xargs:    ``xargs -P W -I{} bash -c 'true {}'``;
- parallel: GNU parallel ``--results DIR`` (one dir with stdout/stderr per command), when installed;
- 0.5.9:    mlrunner 0.5.9's ``run`` from a venv (see benchlib.find_old), when available;
- ours:     this checkout's ``run`` console script in a temp git repo with a dirty work tree,
            everything on: ledger, logs, param/stat files, git snapshot;
- against:  with ``--against PATH``, another build's ``run`` console script (say a venv of an
            earlier commit) run exactly as ours: a before/after in one session.

Every run writes into a new dir; all outputs are deleted only at the end (deleting them
between runs slows the next subject's file creation, see bench/README.md).

Each subject runs ``true {i}`` for i in range(N) (our runs and 0.5.9 read the same
params.yaml: ``template: {main: true {i}}``, ``resource: [0, 1, ..., W-1]``). Reported:
wall time per (N, W) and the marginal cost per command,
``(wall(N2) - wall(N1)) * W / (N2 - N1)``, computed per repetition (fixed start-up
costs cancel), median and min-max over repetitions.

    python bench/bench_dispatch.py [--quick] [--n N1 N2] [--w W ...] [--reps R] [--no-install]
                                   [--against /path/to/venv/bin/run]

3 repetitions (``--quick``: N in {100, 400}, W in {2, 4}, 2 repetitions).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    BENCH_DIR,
    BenchError,
    Row,
    Sample,
    clean_env,
    find_old,
    make_repo,
    our_script,
    ratio,
    timed_run,
    verdict,
)

SUBJECTS = ("floor", "xargs", "parallel", "0.5.9", "against", "ours")
FLOOR_TARGET = 1.5
OLD_TARGET = 0.5


def params_yaml(n: int, w: int) -> str:
    slots = ", ".join(str(i) for i in range(w))
    values = ", ".join(str(i) for i in range(n))
    return f"---\ntemplate:\n  main: true {{i}}\nresource: [{slots}]\n---\ni: [{values}]\n"


def count_dirs(path: Path) -> int:
    return sum(1 for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


class Dispatch:
    """Runs one subject once: returns its wall time, checks its output, cleans up."""

    def __init__(
        self, root: Path, ns: list[int], ws: list[int], install: bool, against: str | None = None
    ) -> None:
        self.root = root
        self.repo = root / "repo"
        files = {f"p-{n}-{w}.yaml": params_yaml(n, w) for n in ns for w in ws}
        files[".gitignore"] = "runs/\n"
        files["train.py"] = "print('train')\n"
        make_repo(self.repo, files)
        (self.repo / "train.py").write_text("print('train, edited')\n")  # a dirty work tree
        (self.repo / "notes.txt").write_text("untracked\n")
        self.counter = 0
        self.env = clean_env(MLRUNNER_PLAIN="1")
        self.ours = our_script("run")
        self.against = against
        self.old, self.old_note = find_old(install)
        self.parallel = shutil.which("parallel")
        self.skipped: dict[str, str] = {}
        self.patch_files: list[int] = []  # distinct git.patch files per run of ours
        if self.old is None:
            self.skipped["0.5.9"] = self.old_note
        if self.parallel is None:
            self.skipped["parallel"] = "skipped: GNU parallel not installed (apt-get install -y parallel)"
        if against is None:
            self.skipped["against"] = "not asked (--against PATH)"
        elif not os.access(against, os.X_OK):
            raise BenchError(f"--against {against}: not an executable run script")
        if shutil.which("xargs") is None:
            self.skipped["xargs"] = "skipped: xargs not found"

    def out(self, label: str) -> Path:
        self.counter += 1
        return self.repo / "runs" / f"{label}-{self.counter}"

    def run(self, subject: str, n: int, w: int) -> float:
        fn: dict[str, Callable[[int, int], float]] = {
            "floor": self.floor,
            "xargs": self.xargs,
            "parallel": self.gnu_parallel,
            "0.5.9": self.old_run,
            "ours": self.our_run,
            "against": self.against_run,
        }
        return fn[subject](n, w)

    def _check(self, out: Path, n: int, what: str) -> None:
        # Outputs are kept until the whole benchmark is over: deleting thousands of files
        # makes ext4 slower to create new ones for a while (it skips recently freed inodes,
        # see bench/README.md), which would bill one subject's cleanup to the next one.
        found = count_dirs(out)
        if found != n:
            raise BenchError(f"{what}: {found} experiment dirs in {out}, expected {n}")

    def floor(self, n: int, w: int) -> float:
        out = self.out("floor")
        wall = timed_run(
            [sys.executable, str(BENCH_DIR / "floor.py"), str(n), str(w), str(out)], env=self.env
        )
        self._check(out, n, "floor")
        return wall

    def xargs(self, n: int, w: int) -> float:
        items = "".join(f"{i}\n" for i in range(n))
        return timed_run(["xargs", "-P", str(w), "-I{}", "bash", "-c", "true {}"], stdin_text=items)

    def gnu_parallel(self, n: int, w: int) -> float:
        out = self.out("parallel")
        items = "".join(f"{i}\n" for i in range(n))
        argv = [str(self.parallel), "--will-cite", "-j", str(w), "--results", str(out), "true", "{}"]
        wall = timed_run(argv, stdin_text=items, env=self.env)
        self._check(out / "1", n, "GNU parallel")
        return wall

    def old_run(self, n: int, w: int) -> float:
        assert self.old is not None
        out = self.out("old")
        argv = [str(self.old / "bin" / "run"), "-y", f"p-{n}-{w}.yaml", "-o", str(out)]
        wall = timed_run(argv, cwd=self.repo, env=self.env)
        self._check(out, n, "mlrunner 0.5.9")
        return wall

    def against_run(self, n: int, w: int) -> float:
        assert self.against is not None
        return self.our_run(n, w, self.against, "against")

    def our_run(self, n: int, w: int, script: str | None = None, label: str = "ours") -> float:
        out = self.out(label)
        wall = timed_run(
            [script or self.ours, "-y", f"p-{n}-{w}.yaml", "-o", str(out)], cwd=self.repo, env=self.env
        )
        first = out / "I_0"
        for name in ("param", "stat", "git.json"):
            if not (first / name).is_file():
                raise BenchError(f"our run wrote no {name} in {first}")
        if not (out / ".mlrunner" / "ledger.db").is_file():
            raise BenchError(f"our run wrote no ledger under {out}")
        if "finished" not in (first / "stat").read_text():
            raise BenchError(f"our run: {first / 'stat'} does not say finished")
        # one snapshot per run: every experiment dir's git.patch is a link to the same file
        dirs = [e.path for e in os.scandir(out) if e.is_dir() and not e.name.startswith(".")]
        inodes = {os.stat(os.path.join(d, "git.patch")).st_ino for d in dirs}
        if label == "ours":
            self.patch_files.append(len(inodes))
        self._check(out, n, label)
        return wall


@dataclass
class Results:
    walls: dict[tuple[str, int, int], Sample]  # (subject, N, W) -> wall s
    marginal: dict[tuple[str, int], Sample]  # (subject, W) -> s per command
    skipped: dict[str, str]  # subject -> why
    patch_files: list[int]  # distinct git.patch files in each of our runs (1: one snapshot per run)


def measure(
    ns: list[int],
    ws: list[int],
    reps: int,
    install: bool,
    log: Callable[[str], None] = print,
    against: str | None = None,
) -> Results:
    """Walls per (subject, N, W) and marginal costs (s per command) per (subject, W)."""
    n1, n2 = ns
    root = Path(tempfile.mkdtemp(prefix="mlrunner-bench-dispatch-"))
    walls: dict[tuple[str, int, int], Sample] = {}
    marginal: dict[tuple[str, int], Sample] = {}
    try:
        d = Dispatch(root, ns, ws, install, against)
        subjects = [s for s in SUBJECTS if s not in d.skipped]
        log(f"  0.5.9: {d.old_note}")
        for w in ws:
            for rep in range(reps):
                turn: dict[tuple[str, int], float] = {}
                for k, n in enumerate(ns):
                    shift = (rep + k) % len(subjects)
                    for s in subjects[shift:] + subjects[:shift]:
                        turn[(s, n)] = d.run(s, n, w)
                        walls.setdefault((s, n, w), Sample()).add(turn[(s, n)])
                for s in subjects:
                    cost = (turn[(s, n2)] - turn[(s, n1)]) * w / (n2 - n1)
                    marginal.setdefault((s, w), Sample()).add(cost)
                cells = ", ".join(f"{s} {turn[(s, n2)]:.2f}s" for s in subjects)
                log(f"  W={w} rep {rep + 1}/{reps}: N={n2}: {cells}")
        return Results(walls, marginal, d.skipped, d.patch_files)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(ns: list[int], ws: list[int], res: Results) -> list[Row]:
    n1, n2 = ns
    walls, marginal, skipped = res.walls, res.marginal, res.skipped
    print(f"\nDispatch: wall s and marginal ms/command, median (min-max); N in {ns}")
    for w in ws:
        print(f"W={w}")
        ours = marginal.get(("ours", w))
        for s in SUBJECTS:
            if s in skipped:
                print(f"  {s:9} {skipped[s]}")
                continue
            m = marginal[(s, w)]
            vs = f"  ours/{s} {ratio(ours.median, m.median)}" if ours and s != "ours" else ""
            print(
                f"  {s:9} N={n1}: {walls[(s, n1, w)].fmt(digits=2)}"
                f"  N={n2}: {walls[(s, n2, w)].fmt(digits=2)}  marginal {m.fmt(1000, 'ms', 2)}{vs}"
            )
    rows: list[Row] = []
    for w in ws:
        ours = marginal[("ours", w)]
        for s, target, label in (
            ("floor", FLOOR_TARGET, "floor"),
            ("0.5.9", OLD_TARGET, "mlrunner 0.5.9"),
            ("xargs", None, "xargs -P"),
            ("parallel", None, "GNU parallel"),
            ("against", None, "--against"),
        ):
            if s == "against" and s in skipped:
                continue
            metric = f"dispatch W={w} ms/cmd vs {label}"
            if s in skipped:
                rows.append(Row(metric, ours.fmt(1000, "", 2), skipped[s], verdict="skipped"))
                continue
            base = marginal[(s, w)]
            if base.median <= 0 or ours.median <= 0:  # N2 - N1 too small for the noise
                goal = f"<= {target}x" if target else "-"
                rows.append(Row(metric, ours.fmt(1000, "", 2), base.fmt(1000, "", 2), "-", goal, "noise"))
                continue
            r = ours.median / base.median
            rows.append(
                Row(
                    metric,
                    ours.fmt(1000, "", 2),
                    base.fmt(1000, "", 2),
                    ratio(ours.median, base.median),
                    f"<= {target}x" if target else "-",
                    verdict(r <= target) if target else "-",
                )
            )
    most = max(res.patch_files)
    rows.append(
        Row(
            f"dispatch: git.patch files per run of {n1}-{n2} tasks",
            str(most),
            target="1 (one snapshot per run)",
            verdict=verdict(most == 1),
        )
    )
    return rows


def run(
    quick: bool,
    ns: list[int] | None = None,
    ws: list[int] | None = None,
    reps: int | None = None,
    install: bool = True,
    against: str | None = None,
) -> list[Row]:
    ns = ns or ([100, 400] if quick else [200, 1000])
    ws = ws or ([2, 4] if quick else [2, 4, 8])
    reps = reps or (2 if quick else 3)
    print(f"Dispatch: N in {ns}, W in {ws}, {reps} repetitions, interleaved")
    return report(ns, ws, measure(ns, ws, reps, install, against=against))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N in {100, 400}, W in {2, 4}, 2 repetitions")
    ap.add_argument("--n", type=int, nargs=2, default=None, metavar=("N1", "N2"))
    ap.add_argument("--w", type=int, nargs="+", default=None)
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 2)")
    ap.add_argument("--no-install", action="store_true", help="never pip install mlrunner 0.5.9")
    ap.add_argument(
        "--against", default=None, metavar="RUN", help="another build's run script, timed as ours"
    )
    args = ap.parse_args()
    from benchlib import print_rows

    rows = run(args.quick, args.n, args.w, args.reps, not args.no_install, args.against)
    print()
    print_rows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
