"""Summary rows from the ledger, Examiner and snapshot benchmarks (issue 8, items 4-6).

bench_ledger.py, bench_examine.py and bench_snapshot.py are standalone scripts; this
module runs each in a subprocess (its report streamed to the console as it comes), then
takes its figures from ``--json`` (ledger) or from its printed report (the other two).
A report line that cannot be found makes the section fail loudly rather than guess.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import BENCH_DIR, BenchError, Row, clean_env, ratio, verdict

EXAMINE_TARGET_S = 5.0
EXAMINE_FULL = 10_000
SNAPSHOT_TARGET_S = 0.5
SNAPSHOT_FULL = 50_000


def stream(script: str, args: list[str]) -> str:
    """Run bench/<script> with ``args``, echoing its output indented; its stdout."""
    argv = [sys.executable, str(BENCH_DIR / script), *args]
    print(f"  $ {Path(argv[0]).name} bench/{script} {' '.join(args)}", flush=True)
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
        cwd=BENCH_DIR.parent,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        print("  | " + line, end="", flush=True)
    if proc.wait() != 0:
        raise BenchError(f"bench/{script} exited {proc.returncode}: {''.join(lines[-5:]).strip()}")
    return "".join(lines)


def find(pattern: str, text: str, script: str) -> re.Match[str]:
    m = re.search(pattern, text, re.MULTILINE)
    if m is None:
        raise BenchError(
            f"bench/{script}: no line matching {pattern!r} in its report (did its format change?)"
        )
    return m


def ledger(mode: str) -> list[Row]:
    procs, transitions = 16, 500
    args = {"tiny": ["--procs", "2", "--transitions", "10", "--attempts", "1000"],
            "quick": ["--transitions", "100", "--attempts", "10000"], "full": []}[mode]  # fmt: skip
    if mode == "tiny":
        procs, transitions = 2, 10
    elif mode == "quick":
        transitions = 100
    with tempfile.TemporaryDirectory(prefix="mlrunner-bench-ledger-json-") as tmp:
        out = Path(tmp) / "ledger.json"
        stream("bench_ledger.py", [*args, "--json", str(out)])
        data = json.loads(out.read_text())
    base, many = data["baseline"], data["contention"]
    label = f"{procs} procs x {transitions}"
    sound = many["attempts_recorded"] == many["attempts_expected"] and many["integrity"] == "ok"
    errors = many["locked_errors"] + many["other_errors"]
    return [
        Row(f"ledger: {label} transitions, tx/s (vs 1 process)", f"{many['throughput_tx_s']:.0f}",
            f"{base['throughput_tx_s']:.0f}", ratio(many["throughput_tx_s"], base["throughput_tx_s"])),
        Row(f"ledger: {label}, p99 wait ms (vs 1 process)", f"{many['wait_p99_ms']:.1f}",
            f"{base['wait_p99_ms']:.1f}", ratio(many["wait_p99_ms"], base["wait_p99_ms"])),
        Row(f"ledger: {label}, 'locked'/other errors, all recorded",
            f"{many['locked_errors']}/{many['other_errors']}, {'yes' if sound else 'NO'}",
            target="0/0, yes", verdict=verdict(errors == 0 and sound)),
    ]  # fmt: skip


def _examine_time(label: str, text: str) -> tuple[float, float] | str:
    """(median, min) of an Examiner report row, or the row's 'skipped...' text."""
    m = find(rf"^{re.escape(label)}\s+(.*)$", text, "bench_examine.py")
    nums = re.match(r"\s*([\d.]+) s \(min ([\d.]+)\)", m.group(1))
    if nums is None:
        return m.group(1).strip()
    return float(nums.group(1)), float(nums.group(2))


def examine(mode: str) -> list[Row]:
    tiny = ["--dirs", "50", "--repeat", "1", "--workers", "2", "--history-dirs", "20", "--points", "20"]
    args = {"tiny": tiny, "quick": ["--quick", "--repeat", "1"], "full": []}[mode]
    text = stream("bench_examine.py", args)
    n = int(find(r"^(\d+) experiment dirs generated", text, "bench_examine.py").group(1))
    w = find(r"^ours, user parser, workers=(\d+), cold", text, "bench_examine.py").group(1)
    full = n >= EXAMINE_FULL
    cold = _examine_time(f"ours, user parser, workers={w}, cold", text)
    serial = _examine_time("ours, user parser, serial, cold", text)
    cached = _examine_time("ours, user parser, cached", text)
    assert isinstance(cold, tuple) and isinstance(serial, tuple) and isinstance(cached, tuple)
    rows = []
    for ours, old_label, metric in (
        (cold, f"0.5.9 Examiner, workers={w}", f"examine {n} dirs, workers={w}, cold s (vs 0.5.9)"),
        (serial, "0.5.9 Examiner, serial", f"examine {n} dirs, serial, cold s (vs 0.5.9)"),
    ):
        old = _examine_time(old_label, text)
        cell = f"{ours[0]:.3f} (min {ours[1]:.3f})"
        if isinstance(old, str):
            rows.append(Row(metric, cell, old, verdict="skipped"))
        else:
            rows.append(Row(metric, cell, f"{old[0]:.3f} (min {old[1]:.3f})", ratio(ours[0], old[0])))
    goal = f"<= {EXAMINE_TARGET_S:g} s" + ("" if full else " at 10k")
    ok = verdict(cold[0] <= EXAMINE_TARGET_S) if full else "-"
    rows.append(Row(f"examine {n} dirs, workers={w}, cold s", f"{cold[0]:.3f} (min {cold[1]:.3f})",
                    target=goal, verdict=ok))  # fmt: skip
    rows.append(
        Row(f"examine {n} dirs, cached s (vs ours cold)", f"{cached[0]:.3f} (min {cached[1]:.3f})",
            f"{cold[0]:.3f} (min {cold[1]:.3f})", ratio(cached[0], cold[0]))
    )  # fmt: skip
    agg = _examine_time(f"ours, add_regex + table(agg='seed'), workers={w}, cold", text)
    assert isinstance(agg, tuple)
    rows.append(Row(f"examine + table(agg=seed) {n} dirs, workers={w}, cold s",
                    f"{agg[0]:.3f} (min {agg[1]:.3f})", target=goal,
                    verdict=verdict(agg[0] <= EXAMINE_TARGET_S) if full else "-"))  # fmt: skip
    size = find(r"^histories (\d+x\d+): plain loop", text, "bench_examine.py").group(1)
    base = _examine_time(f"histories {size}: plain loop (baseline)", text)
    assert isinstance(base, tuple)
    for label in (f"ours, workers={w}, cold", "ours, serial, cold", "ours, cached"):
        got = _examine_time(f"histories {size}: {label}", text)
        assert isinstance(got, tuple)
        rows.append(Row(f"examine histories {size}, {label.removeprefix('ours, ')} s (vs plain loop)",
                        f"{got[0]:.3f} (min {got[1]:.3f})", f"{base[0]:.3f} (min {base[1]:.3f})",
                        ratio(got[0], base[0])))  # fmt: skip
    frame = _examine_time(f"histories {size}: history() frame of every point", text)
    assert isinstance(frame, tuple)
    rows.append(
        Row(f"examine histories {size}, history() DataFrame s", f"{frame[0]:.3f} (min {frame[1]:.3f})")
    )
    return rows


def _snapshot_line(label: str, text: str) -> str:
    m = find(
        rf"^{re.escape(label)}\s+median\s+([\d.]+) ms \(min ([\d.]+), max ([\d.]+)\)",
        text,
        "bench_snapshot.py",
    )
    return f"{float(m.group(1)) / 1000:.3f} ({float(m.group(2)) / 1000:.3f}-{float(m.group(3)) / 1000:.3f})"


def snapshot(mode: str) -> list[Row]:
    args = {"tiny": ["--files", "300", "--repeat", "2", "--tasks", "20"], "quick": ["--quick"], "full": []}[
        mode
    ]
    text = stream("bench_snapshot.py", args)
    n = int(find(r"generated and committed (\d+) files", text, "bench_snapshot.py").group(1))
    warm = _snapshot_line("take_snapshot (GitPython already imported)", text)
    cold = _snapshot_line("take_snapshot cold (fresh interpreter + imports)", text)
    status = _snapshot_line("baseline: git status --porcelain", text)
    warm_s, status_s = float(warm.split()[0]), float(status.split()[0])
    sweep = find(
        r"a (\d+)-task sweep pays ([\d.]+) s \(one snapshot \+ \d+ links\), vs ([\d.]+) s",
        text,
        "bench_snapshot.py",
    )
    full = n >= SNAPSHOT_FULL
    goal = f"<= {SNAPSHOT_TARGET_S:g} s" + ("" if full else " at 50k")
    ok = verdict(warm_s <= SNAPSHOT_TARGET_S) if full else "-"
    cold_ratio = ratio(float(cold.split()[0]), status_s)
    tasks, once, each = sweep.group(1), sweep.group(2), sweep.group(3)
    return [
        Row(f"git snapshot, {n} files, dirty s (vs git status)", warm, status,
            ratio(warm_s, status_s), goal, ok),
        Row("git snapshot, cold (fresh interpreter) s", cold, status, cold_ratio),
        Row(f"git snapshot: a {tasks}-task sweep pays s (vs one per task)", once, each,
            ratio(float(once), float(each)), "once per run"),
    ]  # fmt: skip
