"""Benchmark the git snapshot of a run (issue 4).

Generates a repository with ~50k files (``--quick``: ~5k), commits it, makes a dirty
state (unstaged edits, a staged edit, untracked files, ignored files), then measures in
the same run:

- the baseline: a plain ``git status --porcelain`` on that repository;
- ``take_snapshot`` (median, min-max of several runs, per phase), in-process after
  GitPython is imported, and cold in a fresh interpreter (GitPython import included);
- GitPython's own index reader on the same repository (what the plumbing avoids);
- ``write_snapshot`` into 1,000 experiment dirs: the per-task cost, against taking a
  snapshot per task.

Everything lives under a temporary directory that is deleted at the end.

    python bench/bench_snapshot.py [--quick] [--files N] [--repeat R] [--tasks T]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlrunner.snapshot import take_snapshot, write_snapshot

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def generate(repo: Path, n_files: int) -> None:
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    per_dir = 100
    for i in range(n_files):
        d = repo / "src" / f"pkg{i // (per_dir * 50):03d}" / f"mod{(i // per_dir) % 50:02d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}.py").write_text(f"# file {i}\nVALUE = {i}\n" + "x = 1\n" * (i % 20))
    (repo / ".gitignore").write_text("data/\n*.ckpt\n")
    git(repo, "add", "-A")
    git(repo, "-c", "gc.auto=0", "commit", "-q", "-m", "generated")
    git(repo, "gc", "-q")


def make_dirty(repo: Path) -> None:
    files = sorted((repo / "src").rglob("*.py"))
    for f in files[:: max(1, len(files) // 5)][:5]:
        f.write_text(f.read_text() + "# edited\n")
    staged = files[len(files) // 2]
    staged.write_text(staged.read_text() + "# staged edit\n")
    git(repo, "add", str(staged.relative_to(repo)))
    new = repo / "experiments"
    new.mkdir()
    for i in range(20):
        (new / f"train_v{i}.py").write_text(f"print('train v{i}')\n")
    (repo / "train_v2.py").write_text("print('new training script')\n")
    (repo / "data").mkdir()
    for i in range(50):
        (repo / "data" / f"shard{i}.bin").write_bytes(os.urandom(4096))
    (repo / "model.ckpt").write_bytes(os.urandom(1 << 20))


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a ~5k-file repository and fewer repeats")
    ap.add_argument("--files", type=int, default=None, help="number of tracked files (default 50000)")
    ap.add_argument("--repeat", type=int, default=None, help="timed repeats (default 7, quick 5)")
    ap.add_argument("--tasks", type=int, default=1000, help="experiment dirs for write_snapshot")
    args = ap.parse_args()
    n_files = args.files or (5000 if args.quick else 50000)
    repeat = args.repeat or (5 if args.quick else 7)

    tmp = Path(tempfile.mkdtemp(prefix="mlrunner-bench-snapshot-"))
    try:
        repo = tmp / "repo"
        t = time.perf_counter()
        generate(repo, n_files)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"generated and committed {n_files} files in {time.perf_counter() - t:.1f} s ({repo})")
        make_dirty(repo)
        print("dirty state: 5 unstaged edits, 1 staged edit, 21 untracked files, ignored data/ and *.ckpt")
        git(repo, "status", "--porcelain")  # warm the page cache and refresh the index once
        take_snapshot(repo, work_dir=tmp / "runs" / "first")  # pays the GitPython import ("cold" below)
        cold_code = (
            "import sys, time; t = time.perf_counter(); "
            "from mlrunner.snapshot.record import take_snapshot; "
            "take_snapshot(sys.argv[1], work_dir=sys.argv[2]); print(time.perf_counter() - t)"
        )
        # Interleaved, so that the baseline and the snapshot see the same machine load.
        status: list[float] = []
        status_all: list[float] = []
        snaps: list[float] = []
        cold: list[float] = []
        phases: list[dict[str, float]] = []
        for i in range(repeat):
            status += timed(lambda: git(repo, "status", "--porcelain"), 1)
            status_all += timed(lambda: git(repo, "status", "--porcelain", "--untracked-files=all"), 1)
            tm: dict[str, float] = {}
            t = time.perf_counter()
            snapshot, warnings = take_snapshot(repo, work_dir=tmp / "runs" / f"run{i}", timings=tm)
            snaps.append(time.perf_counter() - t)
            phases.append(tm)
            if i < 3:
                argv = [sys.executable, "-c", cold_code, str(repo), str(tmp / "runs" / f"cold{i}")]
                cold.append(float(subprocess.run(argv, check=True, capture_output=True, text=True).stdout))

        base = statistics.median(status)

        def row(label: str, xs: list[float]) -> None:
            med, lo, hi = statistics.median(xs) * 1000, min(xs) * 1000, max(xs) * 1000
            print(
                f"{label:<48} median {med:7.1f} ms (min {lo:.1f}, max {hi:.1f})",
                f" = {med / 1000 / base:.2f}x status",
            )

        print()
        row("baseline: git status --porcelain", status)
        row("git status --porcelain --untracked-files=all", status_all)
        row("take_snapshot (GitPython already imported)", snaps)
        row("take_snapshot cold (fresh interpreter + imports)", cold)
        names = [k for k in phases[0] if k != "total"]
        print(
            "  phases, median ms: "
            + ", ".join(f"{k} {statistics.median(p.get(k, 0.0) for p in phases) * 1000:.1f}" for k in names)
        )
        size = os.path.getsize(snapshot.patch_path or "")
        print(
            f"  snapshot: dirty={snapshot.dirty} changes={snapshot.changes} "
            f"excluded={len(snapshot.excluded)} patch={size} bytes warnings={len(warnings)}"
        )

        import git as gitpython  # the alternative the plumbing replaces

        gp_repo = gitpython.Repo(repo)
        gp = timed(lambda: gitpython.IndexFile(gp_repo).entries, max(1, repeat // 2))
        row(f"GitPython IndexFile read ({n_files} entries), unused", gp)
        gp_repo.close()

        exp_root = tmp / "output"
        dirs = [exp_root / f"lr={i}" for i in range(args.tasks)]
        for d in dirs:
            d.mkdir(parents=True)
        t = time.perf_counter()
        for d in dirs:
            write_snapshot(snapshot, d)
        writes = time.perf_counter() - t
        links = os.stat(dirs[0] / "git.patch").st_nlink
        text = (dirs[0] / "git.json").read_text()
        t = time.perf_counter()
        for d in dirs:
            (d / "plain.json").write_text(text)
        plain = time.perf_counter() - t
        per_task = writes / args.tasks
        once = statistics.median(snaps)
        sweep = once + writes
        print()
        print(
            f"write_snapshot into {args.tasks} experiment dirs: {writes * 1000:.1f} ms total, "
            f"{per_task * 1e6:.0f} us per task (git.patch link count {links})"
        )
        print(
            f"baseline, a plain {len(text)}-byte file written into each dir: {plain * 1000:.1f} ms total, "
            f"{plain / args.tasks * 1e6:.0f} us per task (write_snapshot = {writes / plain:.2f}x that)"
        )
        print(
            f"a {args.tasks}-task sweep pays {sweep:.2f} s (one snapshot + {args.tasks} links), "
            f"vs {once * args.tasks:.1f} s with a snapshot per task: {once * args.tasks / sweep:.0f}x less"
        )
        extra = statistics.median(s - b for s, b in zip(snaps, status, strict=True))
        verdict = "meets" if once <= 0.5 else "misses"
        print(
            f"target about 0.5 s per snapshot: {verdict} it ({once:.3f} s warm, "
            f"{statistics.median(cold):.3f} s cold); a snapshot costs a plain git status "
            f"+ {extra * 1000:.0f} ms (median of paired runs), at load average {os.getloadavg()[0]:.1f}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
