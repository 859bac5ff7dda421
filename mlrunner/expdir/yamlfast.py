"""The YAML of ``param`` files, both ways, with one set of rules for what is written plain.

Building Python objects is most of PyYAML's time: its representer cost about 0.1 ms per
experiment on the dispatch loop, and reading 10,000 ``param`` files with libyaml's parser
took seconds. The files mlrunner (0.5.9 and 1.x) writes are simple: ``key: scalar`` lines,
plus one-level nested mappings (``_scripts``) indented by two spaces. For that subset:

- :func:`dump` writes exactly what :func:`dump_yaml` (PyYAML's dumper) writes, or returns
  None when it is not sure (the caller then uses the dumper);
- :func:`load` returns exactly what ``yaml.safe_load`` returns, or None (lists, double
  quotes, comments, multi-line scalars, anchors, tags...: the caller uses PyYAML).

Both rest on :func:`plain`, PyYAML's emitter's rule for a plain scalar in block context
(with ``allow_unicode``), and :func:`tag`, its resolver's implicit type of a plain scalar.
A string is written plain when it is :func:`plain` and resolves to ``str``, single-quoted
when it is :func:`plain` and resolves to something else (``'yes'``, ``'1.5'``); the reader
reads exactly those forms (and the implicit types of plain scalars) and nothing else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

try:  # the C dumper/loader are ~10x faster than the pure-Python ones
    from yaml import CSafeDumper as _Dumper
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeDumper as _Dumper  # type: ignore[assignment]
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

STR_TAG = "tag:yaml.org,2002:str"
MAX_PLAIN = 4096  # longer strings go to the dumper (it may fold them; we never guess)
MAX_KEY = 127  # the emitter's simple keys are shorter than 128 characters

# -------------------------------------------------------------------------- the shared rules
# Characters both emitters (libyaml's and PyYAML's) write as they are with allow_unicode:
# printable ASCII and the BMP ranges they accept, less the BOM: no tab, no line break of
# any kind (\x85, \u2028, \u2029 included). libyaml quotes every character outside the BMP.
_PLAIN_CHARS = re.compile("[\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd]+")
_INDICATOR_START = frozenset("#,[]{}&*!|>'\"%@`")  # never first in a plain scalar
_INDICATOR_IF_SPACED = frozenset("-?:")  # not first when followed by a space (or alone)
_RESOLVERS: dict[Any, list[tuple[str, re.Pattern[str]]]] = Resolver.yaml_implicit_resolvers
_WILDCARD = _RESOLVERS.get(None, [])
_BY_FIRST = {c: [*found, *_WILDCARD] for c, found in _RESOLVERS.items() if c is not None}


def plain(text: str) -> bool:
    """The emitter may write ``text`` as a plain scalar (implicit types aside), and a plain
    scalar of this text reads back as this text: PyYAML's ``Emitter.analyze_scalar``, block
    context, single line, no leading or trailing space, at most :data:`MAX_PLAIN` characters."""
    if not text or len(text) > MAX_PLAIN or not _PLAIN_CHARS.fullmatch(text):
        return False
    first = text[0]
    if first in _INDICATOR_START or first == " " or text[-1] in " :":
        return False
    if first in _INDICATOR_IF_SPACED and (len(text) == 1 or text[1] == " "):
        return False
    return ": " not in text and " #" not in text and not text.startswith(("---", "..."))


def tag(text: str) -> str:
    """The tag PyYAML's resolver gives a plain scalar ``text`` (``STR_TAG`` when none)."""
    for found, regexp in _BY_FIRST.get(text[:1], _WILDCARD):
        if regexp.match(text):
            return found
    return STR_TAG


def key_ok(key: str) -> bool:
    """A mapping key both sides handle: a plain string key the emitter writes as a simple key."""
    return len(key) <= MAX_KEY and plain(key) and tag(key) == STR_TAG


# -------------------------------------------------------------------------- PyYAML, whole
def _plain_str(data: Any) -> Any:
    """``data`` with str subclasses (the status enums) as plain str: the safe dumper refuses them."""
    if isinstance(data, str):
        return str.__str__(data)
    if isinstance(data, Mapping):
        return {_plain_str(k): _plain_str(v) for k, v in data.items()}
    if type(data) is list:
        return [_plain_str(v) for v in data]
    if type(data) is tuple:
        return tuple(_plain_str(v) for v in data)
    return data


def dump_yaml(data: Any) -> str:
    """PyYAML's safe dumper as mlrunner uses it: block style, no line folding, unicode, key order."""
    return yaml.dump(_plain_str(data), Dumper=_Dumper, width=1_000_000, allow_unicode=True, sort_keys=False)


def load_yaml(text: str, *, legacy: bool = False) -> Any:
    """PyYAML's safe loader; ``legacy``: 0.5.9's FullLoader (python/tuple tags and the like)
    when the safe loader cannot construct a node. Raises ``yaml.YAMLError``."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.constructor.ConstructorError:
        if not legacy:
            raise
        return yaml.load(text, Loader=yaml.FullLoader)


# -------------------------------------------------------------------------- writing
def _string(text: str) -> str | None:
    """How the dumper writes the string ``text``: plain, single-quoted, or None (not sure)."""
    if not text:
        return "''"
    if not plain(text):
        return None
    if tag(text) == STR_TAG:
        return text
    return "'" + text.replace("'", "''") + "'"


def _scalar(value: Any) -> str | None:
    """How the dumper writes a scalar (as PyYAML's SafeRepresenter), None when not sure."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is float:
        if value != value:
            return ".nan"
        if value in (math.inf, -math.inf):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value).lower()
        return text.replace("e", ".0e", 1) if "." not in text and "e" in text else text
    if isinstance(value, str):  # str enums (the statuses) are written as their text
        return _string(str.__str__(value))
    return None


def _lines(data: Mapping[Any, Any], lines: list[str], top: bool) -> bool:
    """Append ``key: value`` lines (and, at the top, one level of mappings) to ``lines``;
    False when anything needs the dumper."""
    indent = "" if top else "  "
    for key, value in data.items():
        if not isinstance(key, str):
            return False
        key = str.__str__(key)
        if not key_ok(key):
            return False
        if top and isinstance(value, dict):
            lines.append(f"{key}:\n")
            if not value or not _lines(value, lines, top=False):
                return False
            continue
        text = _scalar(value)
        if text is None:
            return False
        lines.append(f"{indent}{key}: {text}\n")
    return True


def dump(data: Mapping[Any, Any]) -> str | None:
    """``data`` as :func:`dump_yaml` writes it, or None when it is outside the simple shape."""
    lines: list[str] = []
    return "".join(lines) if _lines(data, lines, top=True) and lines else None


# -------------------------------------------------------------------------- reading
_constructor = SafeConstructor()


def _construct(method: Callable[[ScalarNode], Any]) -> Callable[[str], Any]:
    return lambda v: method(ScalarNode("", v))


_CONSTRUCT: dict[str, Callable[[str], Any]] = {
    "tag:yaml.org,2002:null": lambda v: None,
    "tag:yaml.org,2002:bool": lambda v: SafeConstructor.bool_values[v.lower()],
    "tag:yaml.org,2002:int": _construct(_constructor.construct_yaml_int),
    "tag:yaml.org,2002:float": _construct(_constructor.construct_yaml_float),
    "tag:yaml.org,2002:timestamp": _construct(_constructor.construct_yaml_timestamp),
}
_MEMO_MAX = 1 << 16
_memo: dict[str, tuple[str, bool, Any]] = {}  # line -> (key, bare, value); scalars are immutable


class _Unsupported(Exception):
    pass


def _value(text: str) -> Any:
    if not text:
        return None
    if text[0] == "'":
        inner = text[1:-1]
        if len(text) < 2 or text[-1] != "'" or "'" in inner.replace("''", ""):
            raise _Unsupported
        value = inner.replace("''", "'")
        if value and not plain(value):  # quoted for another reason than its implicit type
            raise _Unsupported
        return value
    if not plain(text):
        raise _Unsupported
    found = tag(text)
    if found == STR_TAG:
        return text
    construct = _CONSTRUCT.get(found)
    if construct is None:  # merge keys, '=' values
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
    if not key_ok(key):
        raise _Unsupported
    parsed = (key, i < 0, _value(raw))
    if len(_memo) >= _MEMO_MAX:
        _memo.clear()
    _memo[line] = parsed
    return parsed


def load(text: str) -> dict[str, Any] | None:
    """The mapping ``text`` holds (as ``yaml.safe_load``), or None when it is not in the subset."""
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
                if key in nested:
                    raise _Unsupported
                nested[key] = value
                continue
            key, bare, value = _line(line)
            if key in out:  # PyYAML keeps the last; not worth copying
                raise _Unsupported
            open_key, nested = (key if bare else None), None
            out[key] = value
    except (_Unsupported, ValueError, KeyError):
        return None
    return out or None
