"""A stable identity token for a user parser, so cached results survive a new session.

The token hashes what decides a plain function's behaviour: its byte code and constants
(not its file name or line numbers, which change every time a notebook cell runs), its
defaults, its closure cells, and the module globals it names: functions of the same module
recursively, other functions by their code, data by value. When something cannot be
hashed (an open file, a socket...), the parser has no token and is never cached.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import re
import sys
import types
from pathlib import PurePath
from typing import Any

_SIMPLE = (type(None), bool, int, float, complex, str, bytes)
_MAX_DEPTH = 12


class Unhashable(Exception):
    """The parser depends on something that has no stable value."""


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


class _Hasher:
    def __init__(self, module: str | None) -> None:
        self.module = module
        self.h = hashlib.sha256()
        self.seen: set[int] = set()

    def put(self, *parts: object) -> None:
        for part in parts:
            self.h.update(repr(part).encode())
            self.h.update(b"\x00")

    def code(self, code: types.CodeType) -> None:
        self.put(
            "code", code.co_code, code.co_names, code.co_varnames, code.co_freevars,
            code.co_cellvars, code.co_argcount, code.co_kwonlyargcount, code.co_flags,
        )  # fmt: skip
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self.code(const)
            else:
                self.value(const, 0)

    def function(self, func: types.FunctionType, depth: int) -> None:
        self.put("function", func.__module__, func.__qualname__)
        self.code(func.__code__)
        if id(func) in self.seen or depth > _MAX_DEPTH:
            return
        self.seen.add(id(func))
        self.value(func.__defaults__, depth + 1)
        self.value(func.__kwdefaults__, depth + 1)
        for cell in func.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell (a name assigned later)
                self.put("empty-cell")
                continue
            self.value(contents, depth + 1)
        if func.__module__ != self.module:
            return  # a library function: its code is enough
        for name in sorted(_code_names(func.__code__)):
            if name in func.__globals__:
                self.put("global", name)
                self.value(func.__globals__[name], depth + 1)

    def value(self, value: Any, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise Unhashable("nested too deep")
        if isinstance(value, _SIMPLE):
            self.put(type(value).__name__, value)
        elif isinstance(value, (tuple, list)):
            self.put(type(value).__name__, len(value))
            for item in value:
                self.value(item, depth + 1)
        elif isinstance(value, dict):
            self.put("dict", len(value))
            for key, item in value.items():
                self.value(key, depth + 1)
                self.value(item, depth + 1)
        elif isinstance(value, (set, frozenset)):
            self.put(type(value).__name__, sorted(repr(v) for v in value))
        elif isinstance(value, types.ModuleType):
            self.put("module", value.__name__)
        elif isinstance(value, types.FunctionType):
            self.function(value, depth)
        elif isinstance(value, functools.partial):
            self.put("partial")
            self.value(value.func, depth + 1)
            self.value(value.args, depth + 1)
            self.value(value.keywords, depth + 1)
        elif isinstance(value, (types.BuiltinFunctionType, type)):
            self._class_or_builtin(value, depth)
        elif isinstance(value, re.Pattern):
            self.put("pattern", value.pattern, value.flags)
        elif isinstance(value, PurePath):
            self.put("path", str(value))
        else:
            try:
                data = pickle.dumps(value, protocol=4)
            except Exception as exc:
                raise Unhashable(f"{type(value).__name__}: {exc}") from None
            self.put("pickle", hashlib.sha256(data).hexdigest())

    def _class_or_builtin(self, value: Any, depth: int) -> None:
        self.put("object", getattr(value, "__module__", None), getattr(value, "__qualname__", repr(value)))
        if isinstance(value, type) and value.__module__ == self.module and id(value) not in self.seen:
            self.seen.add(id(value))  # a class of the parser's own module: its methods count
            for attr, member in sorted(vars(value).items()):
                if isinstance(member, (types.FunctionType, staticmethod, classmethod, property)):
                    self.put("member", attr)
                    func = getattr(member, "__func__", None) or getattr(member, "fget", None) or member
                    if isinstance(func, types.FunctionType):
                        self.function(func, depth + 1)


def parser_token(func: Any) -> str | None:
    """A hex token that changes whenever ``func``'s behaviour may have, None when unknown."""
    token = getattr(func, "token", None)
    if isinstance(token, str) and type(func).__module__.startswith("mlrunner.examine"):
        return token
    if isinstance(func, functools.partial):
        module = getattr(func.func, "__module__", None)
    elif isinstance(func, types.FunctionType):
        module = func.__module__
    else:
        return None  # bound methods and callable objects carry state we cannot see
    hasher = _Hasher(module)
    hasher.put("python", sys.version_info[:2])
    try:
        hasher.value(func, 0)
    except (Unhashable, RecursionError):
        return None
    return hasher.h.hexdigest()
