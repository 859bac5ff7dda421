"""A fast reader for the simple YAML of ``param`` files, exact or nothing.

Building Python objects is most of PyYAML's time, even with libyaml's parser: reading
10,000 ``param`` files took seconds. The files mlrunner (0.5.9 and 1.x) writes are simple:
``key: scalar`` lines, plus one-level nested mappings (``_scripts``) indented by two
spaces. :func:`load` reads exactly that subset, resolving and constructing each scalar
with PyYAML's own YAML 1.1 resolver and safe constructor, so its result is the one
``yaml.safe_load`` gives; anything outside the subset (lists, double quotes, comments,
multi-line scalars, anchors, tags...) returns None and the caller uses PyYAML.
"""

from __future__ import annotations

import re
from typing import Any

from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

_STR = "tag:yaml.org,2002:str"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_NOT_PLAIN_START = set("-?:,[]{}#&*!|>'\"%@`")
_RESOLVERS = Resolver.yaml_implicit_resolvers
_constructor = SafeConstructor()
_CONSTRUCT = {
    "tag:yaml.org,2002:null": lambda v: None,
    "tag:yaml.org,2002:bool": lambda v: SafeConstructor.bool_values[v.lower()],
    "tag:yaml.org,2002:int": lambda v: _constructor.construct_yaml_int(ScalarNode("", v)),
    "tag:yaml.org,2002:float": lambda v: _constructor.construct_yaml_float(ScalarNode("", v)),
    "tag:yaml.org,2002:timestamp": lambda v: _constructor.construct_yaml_timestamp(ScalarNode("", v)),
}


class _Unsupported(Exception):
    pass


_WILDCARD = _RESOLVERS.get(None, [])
_BY_FIRST = {first: list(found) + list(_WILDCARD) for first, found in _RESOLVERS.items() if first is not None}
_MEMO_MAX = 1 << 16
_memo: dict[str, tuple[str, bool, Any]] = {}  # line -> (key, bare, value); scalars are immutable


def _tag(value: str) -> str:
    for tag, regexp in _BY_FIRST.get(value[0] if value else "", _WILDCARD):
        if regexp.match(value):
            return tag
    return _STR


def _scalar(text: str) -> Any:
    if not text:
        return None
    first = text[0]
    if first == "'":
        inner = text[1:-1]
        if len(text) < 2 or text[-1] != "'" or "'" in inner.replace("''", ""):
            raise _Unsupported
        return inner.replace("''", "'")
    if (
        (first in _NOT_PLAIN_START and (first not in "-?:" or len(text) == 1 or text[1] == " "))
        or ": " in text
        or " #" in text
        or text.endswith(":")
        or text != text.strip()
        or not text.isprintable()
    ):
        raise _Unsupported
    tag = _tag(text)
    if tag == _STR:
        return text
    construct = _CONSTRUCT.get(tag)
    if construct is None:  # merge keys, '=' values, ! & * ...
        raise _Unsupported
    return construct(text)


def _line(line: str) -> tuple[str, bool, Any]:
    """(key, bare, value) of ``key: value``; bare: ``key:`` alone (value None)."""
    known = _memo.get(line)
    if known is not None:
        return known
    i = line.find(": ")
    if i < 0:
        if not line.endswith(":"):
            raise _Unsupported
        key, raw = line[:-1], ""
    else:
        key, raw = line[:i], line[i + 2 :]
    if not _KEY.match(key) or _tag(key) != _STR:
        raise _Unsupported
    parsed = (key, i < 0, _scalar(raw))
    if len(_memo) >= _MEMO_MAX:
        _memo.clear()
    _memo[line] = parsed
    return parsed


def load(text: str) -> dict[str, Any] | None:
    """The mapping ``text`` holds, or None when it is not in the simple subset."""
    if "\t" in text or "\r" in text or text.startswith("\ufeff"):
        return None
    out: dict[str, Any] = {}
    open_key: str | None = None  # a bare `key:` whose value may be an indented block
    nested: dict[str, Any] | None = None
    try:
        for line in text.split("\n"):
            if not line:
                continue
            if line[0] == " ":
                if open_key is None or not line.startswith("  ") or line[2] == " ":
                    raise _Unsupported
                if nested is None:
                    nested = out[open_key] = {}
                key, _, value = _line(line[2:])
                nested[key] = value
                continue
            key, bare, value = _line(line)
            open_key, nested = (key if bare else None), None
            out[key] = value
    except (_Unsupported, ValueError, KeyError):
        return None
    return out or None
