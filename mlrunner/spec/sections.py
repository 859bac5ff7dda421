"""The first document of params.yaml: ``template``, ``default``, ``alias``, ``resource``,
``slurm``, ``env`` and ``notify``, each read into its part of the Spec (and ``-r`` on the
command line)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mlrunner.errors import SpecError, UsageError, did_you_mean
from mlrunner.spec.model import (
    COMMAND_NAME_RE,
    CPU_SLOT_PREFIX,
    ENV_NAME_RE,
    NOTIFY_EVENTS,
    NOTIFY_KEYS,
    RESERVED_NAMES,
    RESERVED_PARAMS,
    RESOURCE_KEYS,
    SLOT_RE,
    SLURM_INT_KEYS,
    SLURM_KEYS,
    URL_RE,
    AliasChoices,
    AliasTable,
    NotifySpec,
    ResourceSpec,
    cpu_slots,
    fold_template,
    parse_memory_mib,
    template_fields,
)
from mlrunner.spec.reader import Reader, Value, is_null, line_of

MAX_CPU_SLOTS = 4096
GPU_UUID_PREFIXES = ("GPU-", "MIG-")  # CUDA_VISIBLE_DEVICES also takes device UUIDs


# --------------------------------------------------------------------------- sections
def read_templates(r: Reader, node: Node, locations: dict[str, int]) -> tuple[tuple[str, str], ...]:
    hint = "e.g.\ntemplate:\n    train: python train.py --lr {lr}"
    if is_null(node) or (isinstance(node, MappingNode) and not node.value):
        raise r.error("'template' is empty: there is no command to run", node, "template", hint=hint)
    if not isinstance(node, MappingNode):
        raise r.error(
            "'template' must be a mapping of command name: shell command", node, "template", hint=hint
        )
    out = []
    for name, key_node, value_node in r.items(node, "template"):
        key = f"template.{name}"
        if not COMMAND_NAME_RE.fullmatch(name):
            raise r.error(
                "a command name may only hold letters, digits, '_' and '-' (it names log files)",
                key_node,
                key,
                hint="rename it, e.g. 'train' or 'eval-2'",
            )
        text = r.scalar(value_node, key)
        if not isinstance(text, str):
            raise r.error("a command must be a string", value_node, key, hint=hint)
        folded = fold_template(text)
        if not folded:
            raise r.error("the command is empty", value_node, key, hint=hint)
        if "\x00" in folded:
            raise r.error("the command contains a NUL character", value_node, key)
        seen: dict[str, str] = {}
        for kind, param in template_fields(folded):
            other = seen.setdefault(param, kind)
            if other != kind:
                raise r.error(
                    f"param '{param}' is used both as {{{param}}} and as [{param}]",
                    value_node,
                    key,
                    hint=f"use one form: {{{param}}} for the bare value, [{param}] for --{param} value",
                )
            if kind == "[" and param in RESERVED_PARAMS:
                raise r.error(
                    f"[{param}] is not allowed: '{param}' is reserved",
                    value_node,
                    key,
                    hint=f"write {{{param}}} to insert its value",
                )
        locations[key] = line_of(key_node)
        out.append((name, folded))
    return tuple(out)


def read_defaults(r: Reader, node: Node, locations: dict[str, int]) -> tuple[tuple[str, Value], ...]:
    if is_null(node):
        return ()
    out = []
    for name, key_node, value_node in r.items(node, "default"):
        key = f"default.{name}"
        if name in RESERVED_NAMES:
            raise r.error(f"'{name}' is reserved and cannot be a param", key_node, key)
        if isinstance(value_node, SequenceNode):
            raise r.error(
                "a default is one value, not a list",
                value_node,
                key,
                hint=f"to sweep values, list them in a grid document after `---`: `{name}: [a, b]`",
            )
        out.append((name, r.value(value_node, key, "default value")))
        locations[key] = line_of(key_node)
    return tuple(out)


def read_aliases(r: Reader, node: Node, locations: dict[str, int]) -> AliasTable:
    if is_null(node):
        return ()
    out: list[tuple[str, AliasChoices]] = []
    for name, key_node, value_node in r.items(node, "alias"):
        key = f"alias.{name}"
        if name in RESERVED_NAMES:
            raise r.error(f"'{name}' is reserved and cannot be an alias", key_node, key)
        if is_null(value_node) or (isinstance(value_node, MappingNode) and not value_node.value):
            raise r.error(
                "an alias needs at least one choice",
                value_node,
                key,
                hint=f"e.g.\nalias:\n    {name}:\n        small: {{layers: 2, dim: 256}}",
            )
        choices: list[tuple[str, tuple[tuple[str, Value], ...]]] = []
        keyset: tuple[str, ...] | None = None
        first_choice = ""
        for choice, _, sets_node in r.items(value_node, key, any_keys=True):
            ckey = f"{key}.{choice}"
            if is_null(sets_node) or (isinstance(sets_node, MappingNode) and not sets_node.value):
                raise r.error("an alias choice must set at least one param", sets_node, ckey)
            sets: list[tuple[str, Value]] = []
            for param, pkey_node, pvalue_node in r.items(sets_node, ckey):
                if param in RESERVED_NAMES:
                    raise r.error(f"'{param}' is reserved and cannot be a param", pkey_node, ckey)
                sets.append((param, r.value(pvalue_node, f"{ckey}.{param}")))
            these = tuple(sorted(p for p, _ in sets))
            if keyset is None:
                keyset, first_choice = these, choice
            elif these != keyset:
                raise r.error(
                    f"every choice of alias '{name}' must set the same params: "
                    f"'{first_choice}' sets {list(keyset)}, '{choice}' sets {list(these)}",
                    sets_node,
                    ckey,
                    hint="add the missing params to every choice",
                )
            choices.append((choice, tuple(sets)))
        locations[key] = line_of(key_node)
        out.append((name, tuple(choices)))
    names = {n for n, _ in out}
    for name, made in out:
        nested = names.intersection(p for p, _ in made[0][1])
        if nested:
            raise SpecError(
                f"alias '{name}' sets '{sorted(nested)[0]}', which is itself an alias",
                file=r.path,
                line=locations[f"alias.{name}"],
                key=f"alias.{name}",
                hint="aliases cannot be nested: list the final params in each choice",
            )
    return tuple(out)


def _slot(r: Reader, node: Node, key: str) -> str:
    v = r.scalar(node, key)
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise r.error(
            f'a resource slot must be a GPU index or a quoted list like "0,1", not {v!r}',
            node,
            key,
            hint='e.g. resource: [0, 1, "2,3"]',
        )
    text = re.sub(r"\s*,\s*", ",", str(v).strip())
    if text and not SLOT_RE.fullmatch(text):
        raise r.error(f"invalid resource slot {text!r}", node, key, hint='e.g. resource: [0, 1, "2,3"]')
    return text


def read_resource(r: Reader, node: Node) -> ResourceSpec:
    hint = 'a list of slots: resource: [0, 1, "2,3"], `resource: auto`, or {gpus: auto, per_gpu: 2}'
    if is_null(node):
        return ResourceSpec(slots=("0",))
    if isinstance(node, SequenceNode):
        if not node.value:
            raise r.error("'resource' lists no slot", node, "resource", hint=hint)
        return ResourceSpec(slots=tuple(_slot(r, n, "resource") for n in node.value))
    if isinstance(node, ScalarNode):
        if r.scalar(node, "resource") == "auto":
            return ResourceSpec(slots=None, auto=True)
        raise r.error(f"'resource' must be a list, not {node.value!r}", node, "resource", hint=hint)
    fields: dict[str, Any] = {"slots": None, "auto": True}
    for name, key_node, value_node in r.items(node, "resource"):
        key = f"resource.{name}"
        if name not in RESOURCE_KEYS:
            raise r.unknown_key("unknown resource setting", key_node, key, name, RESOURCE_KEYS)
        if name == "cpus":
            n = r.scalar(value_node, key)
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CPU_SLOTS:
                raise r.error(
                    f"'cpus' must be a number of CPU slots from 1 to {MAX_CPU_SLOTS}, not {n!r}",
                    value_node,
                    key,
                    hint="resource: {cpus: 4} runs 4 tasks at once, each with no GPU",
                )
            if len(r.items(node, "resource")) > 1:
                raise r.error(
                    "'cpus' cannot be combined with GPU settings", key_node, key, hint="resource: {cpus: 4}"
                )
            return ResourceSpec(slots=cpu_slots(n))
        if name == "gpus":
            if isinstance(value_node, ScalarNode) and r.scalar(value_node, key) == "auto":
                continue
            if not isinstance(value_node, SequenceNode) or not value_node.value:
                raise r.error(
                    "'gpus' must be `auto` or a list of GPU indices", value_node, key, hint="gpus: [0, 1]"
                )
            gpus = []
            for n in value_node.value:
                g = r.scalar(n, key)
                if isinstance(g, bool) or not isinstance(g, int) or g < 0:
                    raise r.error(f"a GPU index must be an integer >= 0, not {g!r}", n, key)
                if g in gpus:
                    raise r.error(f"GPU {g} is listed twice", n, key, hint="use per_gpu to share a GPU")
                gpus.append(g)
            fields.update(auto=False, gpus=tuple(gpus))
        elif name == "per_gpu":
            n = r.scalar(value_node, key)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise r.error(f"'per_gpu' must be an integer >= 1, not {n!r}", value_node, key)
            fields["per_gpu"] = n
        else:
            raw = r.scalar(value_node, key)
            try:
                fields["min_free_memory_mib"] = parse_memory_mib(raw)
            except ValueError:
                raise r.error(
                    f"invalid memory size {raw!r}",
                    value_node,
                    key,
                    hint="e.g. 10GiB, 500MiB, or a number of MiB",
                ) from None
    return ResourceSpec(**fields)


def read_slurm(r: Reader, node: Node) -> tuple[tuple[str, object], ...] | None:
    if is_null(node):
        return None
    out: list[tuple[str, object]] = []
    for name, key_node, value_node in r.items(node, "slurm"):
        key = f"slurm.{name}"
        if name not in SLURM_KEYS:
            more = " (others go under additional_parameters)"
            raise r.unknown_key("unknown slurm setting", key_node, key, name, SLURM_KEYS, more)
        if name == "additional_parameters":
            extra: dict[str, object] = {}
            for k, _, vn in r.items(value_node, key):
                if isinstance(vn, SequenceNode):
                    extra[k] = [r.value(n, f"{key}.{k}") for n in vn.value]
                else:
                    extra[k] = r.value(vn, f"{key}.{k}")
            out.append((name, extra))
            continue
        v = r.value(value_node, key)
        if name in SLURM_INT_KEYS and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise r.error(f"'{name}' must be an integer >= 1, not {v!r}", value_node, key)
        if name == "time" and (isinstance(v, (bool, float)) or (isinstance(v, int) and v < 1)):
            raise r.error(
                f"'time' must be whole minutes (or a Slurm time string), not {v!r}", value_node, key
            )
        out.append((name, v))
    return tuple(out)


def read_env(r: Reader, node: Node, where: str, locations: dict[str, int]) -> tuple[tuple[str, str], ...]:
    """``env:`` (first document) or ``_env:`` (a grid): NAME -> value, ``{p}`` placeholders
    kept for the plan to fill. Values are text: a number is written as YAML reads it."""
    hint = f"e.g. {where}: {{OMP_NUM_THREADS: 1, RUN_NAME: '{{_name}}'}}"
    if is_null(node):
        return ()
    if not isinstance(node, MappingNode):
        raise r.error(f"'{where}' must be a mapping NAME: value", node, where, hint=hint)
    out: list[tuple[str, str]] = []
    for name, key_node, value_node in r.items(node, where):
        key = f"{where}.{name}"
        if not ENV_NAME_RE.fullmatch(name):
            raise r.error(
                "an environment variable's name may only hold letters, digits and '_' "
                "(and not start with a digit)",
                key_node,
                key,
                hint=hint,
            )
        if name.startswith("MLRUNNER_") or name == "CUDA_VISIBLE_DEVICES":
            raise r.error(
                f"'{name}' is set by mlrunner itself",
                key_node,
                key,
                hint="CUDA_VISIBLE_DEVICES comes from the slot (`resource`); MLRUNNER_* describe the attempt",
            )
        value = r.value(value_node, key, "environment value")
        if isinstance(value, bool):
            raise r.error(
                f"an environment value is text, not the boolean {value}",
                value_node,
                key,
                hint=f"quote it: {name}: '{str(value).lower()}'",
            )
        locations[key] = line_of(key_node)
        out.append((name, str(value)))
    return tuple(out)


NOTIFY_HINT = (
    "e.g.\nnotify:\n    targets: [ntfy://my-topic, 'json://localhost:8000/hook']\n"
    "    events: [end, failure]\n(targets are apprise URLs: https://github.com/caronc/apprise/wiki)"
)
MAX_NOTIFY_TIMEOUT = 600.0


def read_notify(r: Reader, node: Node) -> NotifySpec | None:
    """``notify:``: a URL, a list of them, or ``{targets, events, timeout}``. Targets must
    look like URLs here; whether apprise knows them is checked when the run starts
    (:mod:`mlrunner.notify`), with the line of each kept in ``lines``."""
    if is_null(node):
        return None
    if not isinstance(node, MappingNode):
        urls, lines = _notify_targets(r, node, "notify")
        return NotifySpec(urls, lines=lines)
    targets: tuple[tuple[str, ...], tuple[int, ...]] | None = None
    events: tuple[str, ...] = ("end",)
    timeout = NotifySpec.timeout
    for name, key_node, value_node in r.items(node, "notify"):
        key = f"notify.{name}"
        if name not in NOTIFY_KEYS:
            raise r.unknown_key("unknown notify setting", key_node, key, name, NOTIFY_KEYS)
        if name == "targets":
            targets = _notify_targets(r, value_node, key)
        elif name == "events":
            events = _notify_events(r, value_node, key)
        else:
            v = r.value(value_node, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_NOTIFY_TIMEOUT:
                raise r.error(
                    f"'timeout' must be a number of seconds in (0, {MAX_NOTIFY_TIMEOUT:g}], not {v!r}",
                    value_node,
                    key,
                    hint="how long the end of a run waits for its notifications to go out, e.g. timeout: 10",
                )
            timeout = float(v)
    if targets is None:
        raise r.error("'notify' has no 'targets': nowhere to send", node, "notify.targets", hint=NOTIFY_HINT)
    return NotifySpec(targets[0], events, timeout, targets[1])


def _notify_targets(r: Reader, node: Node, key: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    items = node.value if isinstance(node, SequenceNode) else [node]
    if not items:
        raise r.error("no notification target", node, key, hint=NOTIFY_HINT)
    urls, lines = [], []
    for i, item in enumerate(items):
        where = f"{key}[{i}]" if isinstance(node, SequenceNode) else key
        if not isinstance(item, ScalarNode):
            raise r.error("a notification target is one URL", item, where, hint=NOTIFY_HINT)
        url = r.value(item, where, "notification target")
        if not isinstance(url, str) or not URL_RE.fullmatch(url.strip()):
            raise r.error(f"{url!r} is not a notification URL (schema://...)", item, where, hint=NOTIFY_HINT)
        urls.append(url.strip())
        lines.append(line_of(item))
    return tuple(urls), tuple(lines)


def _notify_events(r: Reader, node: Node, key: str) -> tuple[str, ...]:
    items = node.value if isinstance(node, SequenceNode) else [node]
    if not items:
        raise r.error(
            "no event to notify", node, key, hint=f"events: one or more of {', '.join(NOTIFY_EVENTS)}"
        )
    out: list[str] = []
    for i, item in enumerate(items):
        where = f"{key}[{i}]" if isinstance(node, SequenceNode) else key
        event = r.value(item, where, "notify event")
        if event not in NOTIFY_EVENTS:
            guess = did_you_mean(str(event), NOTIFY_EVENTS)
            raise r.error(
                f"unknown notify event {event!r}",
                item,
                where,
                hint=(guess + " " if guess else "") + f"events: {', '.join(NOTIFY_EVENTS)}",
            )
        if event not in out:
            out.append(str(event))
    return tuple(out)


def _split_option(values: list[str]) -> Iterator[str]:
    for value in values:
        yield from re.sub(r"\s*,\s*", ",", value.strip()).split()


def parse_resource_option(values: list[str]) -> ResourceSpec:
    """-r/--resource values: `-r 0,1 -r 2,3` two 2-GPU slots; `-r "0 1 2"` three; `-r auto`."""
    slots = list(_split_option(values))
    hint = 'e.g. -r 0 -r 1, -r "0 1", -r 0,1 (one 2-GPU slot), or -r auto'
    if not slots:
        raise UsageError("no resource slot given", key="-r/--resource", hint=hint)
    special = [s for s in slots if s == "auto" or s.startswith(CPU_SLOT_PREFIX)]
    if special:
        if len(slots) > 1:
            raise UsageError(
                f"'{special[0]}' cannot be combined with other slots", key="-r/--resource", hint=hint
            )
        if special[0] == "auto":
            return ResourceSpec(slots=None, auto=True)
        count = special[0][len(CPU_SLOT_PREFIX) :]
        if not count.isdigit() or not 1 <= int(count) <= MAX_CPU_SLOTS:
            raise UsageError(
                f"invalid CPU slots {special[0]!r}",
                key="-r/--resource",
                hint=f"-r cpu:N runs N tasks at once with no GPU (1 <= N <= {MAX_CPU_SLOTS}), e.g. -r cpu:4",
            )
        return ResourceSpec(slots=cpu_slots(int(count)))
    for slot in slots:
        if not SLOT_RE.fullmatch(slot):
            raise UsageError(f"invalid resource slot {slot!r}", key="-r/--resource", hint=hint)
        for gpu in slot.split(","):
            if not (gpu.isdigit() or gpu.startswith(GPU_UUID_PREFIXES)):
                raise UsageError(
                    f"'{gpu}' in -r {slot!r} is not a GPU index (nor a GPU-/MIG- UUID)",
                    key="-r/--resource",
                    hint=hint + "; -r cpu:4 for 4 slots with no GPU",
                )
    return ResourceSpec(slots=tuple(slots))
