"""TensorBoard event files (``events.out.tfevents.*`` anywhere under an experiment dir, as
PyTorch's ``SummaryWriter``, Lightning and Keras write them): their scalars as histories.

Read with TensorBoard's own ``EventAccumulator`` (the optional extra
``mlrunner[tensorboard]``), keeping every point (no reservoir sampling). Scalars written
the old way (``simple_value``: PyTorch, tensorboardX) and the TF2 way (a scalar tensor of
the ``scalars`` plugin: Keras, ``tf.summary``) are both read. The event files of one dir
are one run, read in order; a TensorBoard restart that goes back in steps drops the
orphaned points, as TensorBoard does. A tag is its metric name (``Loss/train``); a tag
found in several dirs is named ``<dir>/<tag>`` (``logs/validation/epoch_loss``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.util import find_spec
from typing import Any

import numpy as np

from mlrunner.examine.series import Histories, floats

EVENT_PREFIX = "events.out.tfevents."
MAX_DEPTH = 4  # how deep under an experiment dir event files are looked for
INSTALL_HINT = "pip install 'mlrunner[tensorboard]'"


def available() -> bool:
    """Whether the reader can be imported (without importing it)."""
    try:
        return find_spec("tensorboard") is not None
    except (ImportError, ValueError):
        return False


def walk(path: str, rel: str, depth: int, rows: list[tuple[str, int, int]]) -> int:
    """Append (relative path, mtime_ns, size) of the event files under ``path`` (not its
    dot-dirs, not following links); returns the newest mtime seen."""
    newest = 0
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except OSError:
        return 0
    for entry in entries:
        name = entry.name
        try:
            if name.startswith(EVENT_PREFIX) and entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                rows.append((f"{rel}{name}", st.st_mtime_ns, st.st_size))
                newest = max(newest, st.st_mtime_ns)
            elif depth > 1 and not name.startswith(".") and entry.is_dir(follow_symlinks=False):
                newest = max(newest, walk(entry.path, f"{rel}{name}/", depth - 1, rows))
        except OSError:
            continue  # vanished while we looked
    return newest


def _scalar_points(acc: Any, tensor_util: Any) -> dict[str, tuple[list[float], list[float]]]:
    tags = acc.Tags()
    out: dict[str, tuple[list[float], list[float]]] = {}
    for tag in tags.get("scalars", []):
        events = acc.Scalars(tag)
        out[tag] = ([e.step for e in events], [e.value for e in events])
    for tag in tags.get("tensors", []):
        if acc.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
            continue
        steps, values = [], []
        for event in acc.Tensors(tag):
            array = tensor_util.make_ndarray(event.tensor_proto)
            if array.size == 1:
                steps.append(event.step)
                values.append(float(array.reshape(-1)[0]))
        out.setdefault(tag, (steps, values))
    return out


def read_events(exp_dir: str, files: Sequence[str]) -> tuple[Histories, dict[str, Any], list[str]]:
    """The scalars of the event files ``files`` (paths relative to ``exp_dir``): histories,
    last values, problems (one line each)."""
    if not files:
        return {}, {}, []
    try:
        from tensorboard.backend.event_processing import event_accumulator as ea
        from tensorboard.util import tensor_util
    except ImportError as exc:
        shown = files[0] + (f" and {len(files) - 1} more" if len(files) > 1 else "")
        return (
            {},
            {},
            [
                f"TensorBoard event file {shown}: reading it needs the tensorboard package ({exc}); "
                f"{INSTALL_HINT}"
            ],
        )
    dirs = sorted({os.path.dirname(f) for f in files})
    per_dir: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    problems: list[str] = []
    keep_all = {ea.SCALARS: 0, ea.TENSORS: 0, ea.IMAGES: 1, ea.AUDIO: 1, ea.HISTOGRAMS: 1}
    for rel in dirs:
        try:
            acc = ea.EventAccumulator(os.path.join(exp_dir, rel), size_guidance=keep_all)
            acc.Reload()
            per_dir[rel] = _scalar_points(acc, tensor_util)
        except Exception as exc:  # a damaged file costs its scalars, not the table
            problems.append(
                f"cannot read the TensorBoard events in {rel or '.'}/: {type(exc).__name__}: {exc}"
            )
    seen: dict[str, int] = {}
    for points in per_dir.values():
        for tag in points:
            seen[tag] = seen.get(tag, 0) + 1
    histories: Histories = {}
    last: dict[str, Any] = {}
    for rel, points in per_dir.items():
        for tag, (steps, values) in points.items():
            name = f"{rel}/{tag}" if seen[tag] > 1 and rel else tag
            if not values:
                continue
            histories[name] = (floats(steps), np.asarray(values, dtype=np.float64))
            last[name] = values[-1]
    return histories, last, problems
