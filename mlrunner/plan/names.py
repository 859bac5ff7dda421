"""0.5.9-compatible experiment names, made safe as one path component.

Names are mlrunner 0.5.9's (``Norm_new-Moment_0.1``), made safe: a name that 0.5.9 would
produce and that is a safe single path component (no ``/``, no control or line-break
character, no leading ``.``, at most 255 UTF-8 bytes) is kept as is; any other name is
sanitised and gets ``-<16 hex of sha256(0.5.9 name)>``, so distinct 0.5.9 names stay
distinct. :func:`fit_name` (a name cut to a byte limit with a stable suffix) is shared with
the log names of :mod:`mlrunner.expdir.names`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping

from mlrunner.spec import Value

MAX_NAME_BYTES = 255
EMPTY_NAME = "default"  # a grid that sets no param (0.5.9 used the output root itself)
_NAME_MAXLEN = 100  # 0.5.9's str_maxlen: a string value keeps its last 100 characters
_UNSAFE_RE = re.compile("[/\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _camel(key: str) -> str:
    """0.5.9's key style: split on '-' (else '_'), all but the last part cut to 2 letters."""
    parts = key.split("-")
    if len(parts) == 1:
        parts = parts[0].split("_")
    return "".join(p[:2].title() if len(p) > 2 else p for p in parts[:-1]) + parts[-1].title()


def _value_text(value: Value) -> str:
    if isinstance(value, str):
        if os.path.exists(value):
            text = os.path.basename(value)
        else:
            text = value.lstrip("/.").replace("/", "_")
        return text[-_NAME_MAXLEN:] if len(text) > _NAME_MAXLEN else text
    if isinstance(value, bool):
        return "T" if value else "F"
    try:
        return f"{value:g}"
    except OverflowError:  # an int too large for a float (0.5.9 crashes)
        return str(value)


def entry(key: str, value: Value) -> str:
    return f"{_camel(key)}_{_value_text(value)}"


def digest(text: str, n: int) -> str:
    """The first ``n`` hex digits of sha256(``text``)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def fit_name(base: str, suffix: str, limit: int = MAX_NAME_BYTES) -> str:
    """``base-suffix``, ``base`` cut (at a character boundary) so the whole fits ``limit`` bytes."""
    room = limit - len(suffix.encode()) - 1
    prefix = base.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
    return f"{prefix}-{suffix}"


def safe_name(raw: str) -> str:
    """A 0.5.9 name made into one safe path component (kept unchanged when it already is one)."""
    if not raw:
        return EMPTY_NAME
    if raw[0] != "." and _UNSAFE_RE.search(raw) is None and len(raw.encode("utf-8", "surrogatepass")) <= 255:
        return raw
    cleaned = _UNSAFE_RE.sub("_", raw)
    if cleaned.startswith("."):
        cleaned = "_" + cleaned[1:]
    return fit_name(cleaned, digest(raw, 16))


def legacy_name(grid_params: Mapping[str, Value]) -> str:
    """0.5.9's ``spec2name``: what mlrunner 0.5.9 called this experiment (possibly unsafe)."""
    return "-".join(entry(k, v) for k, v in grid_params.items())


def experiment_name(grid_params: Mapping[str, Value]) -> str:
    """The experiment dir name of one grid combination (document order of the grid's keys)."""
    return safe_name(legacy_name(grid_params))
