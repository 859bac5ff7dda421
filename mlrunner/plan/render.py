"""Rendering: ``{p}`` / ``[p]`` fields of command templates, canonical JSON, shell lines."""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping

from mlrunner.plan.tasks import Command
from mlrunner.spec import PLACEHOLDER_RE, Value, template_fields

_SHELL_KEYWORDS = frozenset(
    {"if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac", "select",
     "function", "time", "coproc", "!", "[[", "{", "}"}
)  # fmt: skip


_PLAIN_WORDS = re.compile(r"[\w@%+=:,./\- ]+")


def _is_simple(text: str) -> bool:
    """True when ``ENV=x <text> > log 2>&1`` means the same as running text in bash with ENV set."""
    if _PLAIN_WORDS.fullmatch(text):  # the common case, without the cost of shlex
        first = text.split(None, 1)[0] if text.strip() else ""
        return bool(first) and first not in _SHELL_KEYWORDS
    if any(c in text for c in "`#$\n\\"):
        return False
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:
        return False
    if not tokens or tokens[0] in _SHELL_KEYWORDS:
        return False
    return not any(t and set(t) <= set("();<>|&") for t in tokens)


def shell_line(
    command: Command,
    resource: str,
    log_path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
) -> str:
    """A copy-pasteable line that runs ``command`` as a worker does (for the param file's
    _scripts): ``env`` (the task's env: values) and ``CUDA_VISIBLE_DEVICES`` set."""
    extra = "".join(f"{k}={shlex.quote(v)} " for k, v in (env or {}).items())
    prefix = f"{extra}CUDA_VISIBLE_DEVICES={shlex.quote(resource)}"
    log = shlex.quote(os.fspath(log_path))
    if _is_simple(command.text):
        return f"{prefix} {command.text} > {log} 2>&1"
    return f"{prefix} bash -c {shlex.quote(command.text)} > {log} 2>&1"


# --------------------------------------------------------------------------- rendering
def escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


class Template:
    """A template split once into literal pieces and its fields."""

    __slots__ = ("name", "text", "pieces", "fields", "params")

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        pieces, pos = [], 0
        for m in PLACEHOLDER_RE.finditer(text):
            pieces.append(text[pos : m.start()])
            pos = m.end()
        pieces.append(text[pos:])
        self.pieces = tuple(pieces)
        self.fields = tuple(template_fields(text))
        self.params = frozenset(p for _, p in self.fields)


def render_field(kind: str, param: str, value: Value) -> str:
    """``{p}`` -> the shell-quoted value; ``[p]`` -> ``--p value``, ``--p`` (True) or '' (False).

    Raises ValueError for a bool in ``{p}`` (the caller words the SpecError)."""
    if isinstance(value, bool):
        if kind == "{":
            raise ValueError(param)
        return f"--{param}" if value else ""
    if kind == "{":
        return shlex.quote(str(value))
    return f"--{param} {shlex.quote(str(value))}"


def frag(key: str, value: Value) -> str:
    """``"key":value`` as in the canonical JSON of a params dict."""
    return f"{canonical(key)}:{canonical(value)}"


json_str = json.encoder.encode_basestring  # a str as a JSON string literal (non-ASCII kept)


def canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
