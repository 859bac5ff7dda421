"""Reading params.yaml's YAML: composed nodes with their line numbers, typed values, errors.

PyYAML's composer (libyaml's when available) keeps every node's position, so a problem
can name the file, line and key; mappings are read here with merge keys applied and
duplicate keys rejected (PyYAML silently keeps the last). :mod:`mlrunner.spec.model` builds the
:class:`~mlrunner.spec.model.Spec` from what this module reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mlrunner.errors import SpecError, did_you_mean

Value = str | int | float | bool

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_INT_DIGITS = 4300  # Python's limit for int <-> decimal text (sys.get_int_max_str_digits)
MAX_ALIAS_REPEATS = 100_000  # nodes that aliases (*name) may repeat in one document


class Reader:
    """Walks composed YAML nodes of one file, turning every problem into a located SpecError."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._constructor = SafeConstructor()

    def error(
        self, message: str, node: Node | None = None, key: str | None = None, hint: str | None = None
    ) -> SpecError:
        line = node.start_mark.line + 1 if node is not None else None
        return SpecError(message, file=self.path, line=line, key=key, hint=hint)

    def unknown_key(
        self, message: str, key_node: Node, key: str, name: str, valid: Sequence[str], more: str = ""
    ) -> SpecError:
        """An unknown setting ``name`` at ``key``: the hint is a did-you-mean and the valid keys."""
        guess = did_you_mean(name, valid)
        hint = (guess + " " if guess else "") + f"valid keys: {', '.join(valid)}{more}"
        return self.error(message, key_node, key, hint=hint)

    def error_at(
        self, message: str, line: int | None, key: str | None = None, hint: str | None = None
    ) -> SpecError:
        return SpecError(message, file=self.path, line=line, key=key, hint=hint)

    def scalar(self, node: Node, key: str) -> object:
        """A scalar node's Python value; dates stay text; other tags are an error."""
        if not isinstance(node, ScalarNode):
            kind = "a mapping" if isinstance(node, MappingNode) else "a list"
            raise self.error(f"expected a single value, found {kind}", node, key)
        c = self._constructor
        tag = node.tag
        if tag in (_STR, _TIMESTAMP):
            return node.value
        if tag == _INT:
            too_long = self.error(
                f"an integer with more than {MAX_INT_DIGITS} digits is not supported",
                node,
                key,
                hint="quote it to pass it as text: '123...'",
            )
            try:
                number = c.construct_yaml_int(node)
            except ValueError:  # Python refuses to read decimal text that long
                raise too_long from None
            if number.bit_length() > MAX_INT_DIGITS * 3.32:  # 0x... text: as long in decimal
                raise too_long
            return number
        if tag == _FLOAT:
            return c.construct_yaml_float(node)
        if tag == _BOOL:
            return c.construct_yaml_bool(node)
        if tag == _NULL:
            return None
        raise self.error(
            f"unsupported YAML tag {tag!r}", node, key, hint="use plain strings, numbers or true/false"
        )

    def value(self, node: Node, key: str, what: str = "value") -> Value:
        """A param value: str, int, float or bool (never null, a list or a mapping)."""
        if isinstance(node, MappingNode):
            raise self.error(
                f"a {what} cannot be a mapping (nested mappings are not supported)",
                node,
                key,
                hint="give a plain value; to set several params from one name use `alias:`",
            )
        if isinstance(node, SequenceNode):
            raise self.error(
                f"a {what} cannot be a list here",
                node,
                key,
                hint="a grid lists the values of a param ONCE: `lr: [0.1, 0.01]`; "
                "to pass a list as one value, quote it: `'1,2,3'`",
            )
        v = self.scalar(node, key)
        if v is None:
            raise self.error(
                f"{what} is empty (null)", node, key, hint="write a value; for an empty string write ''"
            )
        if isinstance(v, str) and "\x00" in v:
            raise self.error(f"{what} contains a NUL character", node, key, hint="remove the \\0")
        return v  # type: ignore[return-value]

    def items(
        self, node: Node, where: str, *, any_keys: bool = False, _merging: tuple[Node, ...] = ()
    ) -> list[tuple[str, Node, Node]]:
        """(key, key node, value node) of a mapping, merge keys applied, duplicates rejected."""
        if not isinstance(node, MappingNode):
            raise self.error(f"'{where}' must be a mapping (key: value lines)", node, where or None)
        if any(node is n for n in _merging):
            raise self.error(
                "a mapping merges itself (<<: *anchor inside its own anchor)", node, where or None
            )
        merged: dict[str, tuple[Node, Node]] = {}
        explicit: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    for k, kn, vn in self.items(source, where, any_keys=any_keys, _merging=(*_merging, node)):
                        merged.setdefault(k, (kn, vn))
                continue
            raw = self.scalar(key_node, where) if isinstance(key_node, ScalarNode) else None
            if raw is None or (not any_keys and (isinstance(raw, bool) or not isinstance(raw, str))):
                shown = key_node.value if isinstance(key_node, ScalarNode) else "a non-scalar"
                hint = None
                if isinstance(key_node, ScalarNode):
                    hint = f"quote it: '{shown}': ..."
                    if isinstance(raw, bool):
                        hint += " (YAML reads yes/no/on/off/true/false as booleans)"
                raise self.error(
                    f"key {shown!r} must be a string" + (f" (in '{where}')" if where else ""),
                    key_node,
                    where or None,
                    hint=hint,
                )
            k = str(raw)
            if k in explicit:
                first = explicit[k][0].start_mark.line + 1
                raise self.error(
                    f"duplicate key (first set on line {first}); YAML would silently keep only the last",
                    key_node,
                    f"{where}.{k}" if where else k,
                    hint="remove one of them; to sweep several values list them once: `key: [a, b]`",
                )
            explicit[k] = (key_node, value_node)
        out = {k: kv for k, kv in merged.items() if k not in explicit}
        out.update(explicit)
        return [(k, kn, vn) for k, (kn, vn) in out.items()]


def line_of(node: Node) -> int:
    return node.start_mark.line + 1


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def compose(text: str, path: str) -> list[Node]:
    """The YAML documents of ``text`` as nodes; aliases checked (:func:`check_aliases`)."""
    try:
        docs = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem = f"{problem} ({exc.context})"
        hint = "check indentation, unclosed brackets/quotes, and ': ' after each key"
        if "alias" in problem:
            hint = "a *name must refer to an &name anchor defined earlier in the same document"
        raise SpecError(
            f"YAML syntax error: {problem}",
            file=path,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
            hint=hint,
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"YAML error: {exc}", file=path, hint="check the file's YAML syntax") from None
    if "*" in text:  # no '*', no alias
        for doc in docs:
            check_aliases(doc, path)
    return docs


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def check_aliases(root: Node, path: str) -> None:
    """Reject a document whose aliases loop, or repeat more than :data:`MAX_ALIAS_REPEATS`
    nodes (a 500-byte "billion laughs" of nested anchors and merge keys would otherwise keep
    the reader busy for hours). Linear in the distinct nodes: an aliased node is one object."""
    sizes: dict[int, int] = {}  # id -> nodes under it, aliases expanded
    on_path = {id(root)}
    stack = [(root, iter(_children(root)))]
    while stack:
        node, kids = stack[-1]
        child = next(kids, None)
        if child is None:
            stack.pop()
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(k)] for k in _children(node))
            continue
        if id(child) in on_path:
            raise SpecError(
                "an alias refers to a node that contains it (a loop: e.g. a mapping that merges itself)",
                file=path,
                line=line_of(child),
                hint="an alias (*name) may only repeat a node defined before and outside it",
            )
        if id(child) not in sizes:
            on_path.add(id(child))
            stack.append((child, iter(_children(child))))
    repeats = sizes[id(root)] - len(sizes)
    if repeats > MAX_ALIAS_REPEATS:
        raise SpecError(
            f"the aliases (*name) of this document repeat {count_text(repeats)} nodes, more than "
            f"{MAX_ALIAS_REPEATS:,}",
            file=path,
            line=line_of(root),
            hint="write the values out, or nest fewer aliases and merge keys (<<: *name)",
        )


def count_text(n: int) -> str:
    """``n`` for a message: digits when short, ``about 10^k`` when astronomically long."""
    return f"{n:,}" if n < 10**15 else f"about 2^{n.bit_length() - 1}"
