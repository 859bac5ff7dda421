"""A grid document -> its combinations, in run order (issue 15's sweep grammar).

The combinations of a document are ``(block, combo)`` rows: a :class:`Block` is one *shape*
of written params (their keys in name order, and the values each column takes), a combo a
tuple of value indices, one per column, so every per-task piece of the plan stays a table
lookup (:class:`mlrunner.plan.grid.GridPlan` builds one per block). A plain document, lists
and ranges (zipped or not), has one block and its rows are ``itertools.product``'s, lazily;
conditional sub-grids give one block per branch shape, and their rows come from
:class:`Space`, which numbers the combinations in product order (``at(i)``) without
listing them, so ``--sample`` of a huge conditional grid costs what it samples.

Sizes are counted before anything is listed (:func:`count`): the plan refuses a sweep over
its task limit before it expands it. A ``_samples`` document never lists its product: it
draws. Every random choice comes from a ``random.Random`` seeded with text made of the
seed and the document's number, so a seed gives the same tasks in any process.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeAlias

from mlrunner.errors import SpecError
from mlrunner.spec import Axis, Grid, Spec, SubGrid, Value, choice_key, count_text

Item: TypeAlias = tuple[tuple[int, ...], str, Value]  # (document position, key, value)
Row: TypeAlias = tuple[int, tuple[int, ...]]  # (block, value index per column)
Check: TypeAlias = tuple[int, dict[int, bool], tuple[Value, ...], str]  # (column, memo, values, key)
MAX_DRAWS_PER_SAMPLE = 100  # a _samples document whose excludes reject more than this gives up


def same(a: Value, b: Value) -> bool:
    """Whether an _exclude value matches: numbers by value (1 matches 1.0), the rest by type and value."""
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)):
        return a.__class__ is b.__class__ and a == b
    return isinstance(b, (int, float)) and a == b


class Block:
    """One shape of written params: their keys (name order) and each column's values."""

    def __init__(self, keys: tuple[str, ...], values: Sequence[Sequence[Value]] | None = None) -> None:
        self.keys = keys
        self.values: list[list[Value]] = [list(v) for v in values] if values else [[] for _ in keys]
        self._index: list[dict[tuple[type, Value], int]] = [{} for _ in keys]
        for col, column in enumerate(self.values):
            for i, v in enumerate(column):
                self._index[col].setdefault((v.__class__, v), i)

    def intern(self, values: Iterable[Value]) -> tuple[int, ...]:
        combo = []
        for col, v in enumerate(values):
            index = self._index[col]
            i = index.get((v.__class__, v))
            if i is None:
                i = index[(v.__class__, v)] = len(self.values[col])
                self.values[col].append(v)
            combo.append(i)
        return tuple(combo)


class Blocks:
    """The blocks of one document, found by shape."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self._by_keys: dict[tuple[str, ...], int] = {}

    def add(self, block: Block) -> int:
        self._by_keys[block.keys] = len(self.blocks)
        self.blocks.append(block)
        return len(self.blocks) - 1

    def row(self, items: Iterable[tuple[str, Value]]) -> Row:
        pairs = list(items)
        keys = tuple(k for k, _ in pairs)
        b = self._by_keys.get(keys)
        if b is None:
            b = self.add(Block(keys))
        return b, self.blocks[b].intern(v for _, v in pairs)


# --------------------------------------------------------------------------- the space of a sub-grid
class _Factor:
    """One factor of a product: a param, a zipped group of params, or a conditional param."""

    def __init__(self, count: int) -> None:
        self.count = count

    def at(self, i: int) -> list[Item]:
        raise NotImplementedError

    def draw(self, rng: random.Random) -> list[Item]:
        raise NotImplementedError


class _Params(_Factor):
    def __init__(self, members: list[tuple[tuple[int, ...], Axis]]) -> None:
        super().__init__(members[0][1].size)
        self.members = members

    def at(self, i: int) -> list[Item]:
        return [(pos, a.key, a.value_at(i)) for pos, a in self.members]

    def draw(self, rng: random.Random) -> list[Item]:
        first = self.members[0][1]
        if first.dist is not None:
            return [(self.members[0][0], first.key, first.dist.draw(rng))]
        return self.at(rng.randrange(self.count))


class _Branches(_Factor):
    def __init__(self, pos: tuple[int, ...], axis: Axis) -> None:
        assert axis.branches is not None
        self.pos, self.axis = pos, axis
        self.spaces = [Space(sub, pos) for _, sub in axis.branches]
        self.starts = list(itertools.accumulate((s.count for s in self.spaces), initial=0))
        super().__init__(self.starts[-1])

    def _item(self, b: int) -> Item:
        return (self.pos, self.axis.key, self.axis.value_at(b))

    def at(self, i: int) -> list[Item]:
        b = bisect.bisect_right(self.starts, i) - 1
        return [self._item(b), *self.spaces[b].at(i - self.starts[b])]

    def draw(self, rng: random.Random) -> list[Item]:
        b = rng.randrange(len(self.spaces))
        return [self._item(b), *self.spaces[b].draw(rng)]


class Space:
    """The combinations of a sub-grid (or a document's params), numbered in product order."""

    def __init__(self, sub: SubGrid, prefix: tuple[int, ...] = ()) -> None:
        zipped = {k: group for group in sub.zips for k in group}
        by_key = {a.key: (prefix + (j,), a) for j, a in enumerate(sub.axes)}
        self.factors: list[_Factor] = []
        for j, axis in enumerate(sub.axes):
            group = zipped.get(axis.key)
            if group is not None:
                if group[0] == axis.key:
                    self.factors.append(_Params([by_key[k] for k in group]))
            elif axis.branches is not None:
                self.factors.append(_Branches(prefix + (j,), axis))
            else:
                self.factors.append(_Params([(prefix + (j,), axis)]))
        self.count = math.prod(f.count for f in self.factors)

    def at(self, i: int) -> list[Item]:
        items: list[Item] = []
        for f in reversed(self.factors):  # the last factor varies fastest, as itertools.product
            i, r = divmod(i, f.count)
            items.extend(f.at(r))
        return items

    def draw(self, rng: random.Random) -> list[Item]:
        return [item for f in self.factors for item in f.draw(rng)]


def _ordered(items: list[Item]) -> Iterator[tuple[str, Value]]:
    """The written params of a combination in document order (sub-grid params after their
    conditional param): the order of the experiment dir name."""
    return ((k, v) for _, k, v in sorted(items, key=operator.itemgetter(0)))


# --------------------------------------------------------------------------- sizes
def count(grid: Grid, sample: int | None = None) -> int:
    """How many tasks a document gives at most (before its excludes and dedup), unexpanded."""
    if grid.samples is not None:
        return (grid.samples if sample is None else min(sample, grid.samples)) + len(grid.include)
    total = Space(grid.body).count
    if sample is not None:
        total = min(total, sample)
    return total + len(grid.include)


def check_size(spec: Spec, grids: Sequence[Grid], sample: int | None, max_tasks: int) -> None:
    """SpecError when the documents' tasks add up to more than ``max_tasks``."""
    sizes = [count(g, sample) for g in grids]
    total = sum(sizes)
    if total <= max_tasks:
        return
    biggest = max(range(len(grids)), key=sizes.__getitem__)
    parts = "; ".join(
        f"grid {g.index} (line {g.line}): {count_text(n)}" for g, n in zip(grids, sizes, strict=True)
    )
    raise SpecError(
        f"the sweep has {count_text(total)} tasks, more than the limit of {max_tasks:,} ({parts})",
        file=spec.path,
        line=grids[biggest].line,
        hint="make the grids smaller, draw a subset (`_samples: N` in a document, or `run --sample N`), "
        "or raise the limit with `run --max-tasks N`",
    )


# --------------------------------------------------------------------------- a document's rows
class Expansion:
    """A document's blocks and rows (run order). ``rows`` may be lazy; the blocks are complete."""

    def __init__(self, blocks: list[Block], rows: Iterable[Row], drew: bool) -> None:
        self.blocks = blocks
        self.rows = rows
        self.drew = drew  # whether anything was drawn with the seed given (not the document's _seed)


def expand(
    spec: Spec,
    grid: Grid,
    excluded: Callable[[Block, tuple[int, ...]], bool] | None,
    *,
    seed: int | str | None,
    sample: int | None = None,
    order: str | None = None,
) -> Expansion:
    """The combinations of ``grid``: excludes dropped, ``--sample`` drawn, includes added,
    shuffled when its order (or ``order``, the command line's) is ``shuffle``.

    ``excluded(block, combo)``: whether the document's ``_exclude`` drops that combination
    (None: it has none)."""
    seed = grid.seed if grid.seed is not None else seed
    blocks = Blocks()
    drew = sample is not None
    rows: Iterable[Row]
    if grid.samples is not None:  # --sample N draws at most N of them
        n = grid.samples if sample is None else min(sample, grid.samples)
        rows, drew = _draw(spec, grid, n, blocks, excluded, _rng("samples", seed, grid)), True
    else:
        total, nth, every = _combinations(grid, blocks)
        if sample is not None:
            if grid.plain:  # the draw mlrunner made before issue 15: a resumed run gets its tasks
                rng = random.Random(f"mlrunner-sample\x00{seed}\x00{grid.params!r}")
                rows = [nth(i) for i in _pick(rng, total, sample)]
            else:
                rows = _sample(total, sample, nth, excluded, blocks, _rng("sample", seed, grid))
        else:
            rows = every()
            if excluded is not None:
                rows = [(b, c) for b, c in rows if not excluded(blocks.blocks[b], c)]
    if grid.include:
        rows = itertools.chain(rows, [blocks.row(entry) for entry in grid.include])
    if (order or grid.order) == "shuffle":
        rows = list(rows)
        _rng("order", seed, grid).shuffle(rows)
        drew = True
    return Expansion(blocks.blocks, rows, drew and grid.seed is None)


def _rng(purpose: str, seed: int | str | None, grid: Grid) -> random.Random:
    return random.Random(f"mlrunner-{purpose}\x00{seed}\x00{grid.index}")


def _combinations(
    grid: Grid, blocks: Blocks
) -> tuple[int, Callable[[int], Row], Callable[[], Iterable[Row]]]:
    """(how many, the i-th in product order, all of them in order) for a document."""
    if any(a.branches is not None for a in grid.axes):
        space = Space(grid.body)

        def at(i: int) -> Row:
            return blocks.row(_ordered(space.at(i)))

        return space.count, at, lambda: [at(i) for i in range(space.count)]
    # lists and ranges: one block, the rows itertools.product's (lazy)
    axes = grid.axes
    column = {a.key: i for i, a in enumerate(axes)}
    zipped = {k: g for g in grid.zips for k in g}
    factors = [column[zipped.get(a.key, (a.key,))[0]] for a in axes]  # column -> its factor's column
    firsts = sorted(set(factors))
    sizes = [axes[c].size for c in firsts]
    where = [firsts.index(f) for f in factors]  # column -> its factor

    def nth(i: int) -> Row:  # only the values drawn are listed (a range may hold 10**12)
        indices = []
        for n in reversed(sizes):
            i, r = divmod(i, n)
            indices.append(r)
        indices.reverse()
        return blocks.row((a.key, a.value_at(indices[f])) for a, f in zip(axes, where, strict=True))

    def every() -> Iterable[Row]:  # at most the task limit: check_size came first
        blocks.add(Block(tuple(a.key for a in axes), [_listed(a) for a in axes]))
        combos: Iterable[tuple[int, ...]] = itertools.product(*(range(n) for n in sizes))
        if len(firsts) != len(axes):  # zipped columns take the index of their group
            combos = map(operator.itemgetter(*where), combos)
        return ((0, combo) for combo in combos)

    return math.prod(sizes), nth, every


def _listed(axis: Axis) -> tuple[Value, ...]:
    assert axis.values is not None
    return axis.values if isinstance(axis.values, tuple) else axis.values.values()


def _pick(rng: random.Random, total: int, k: int) -> list[int]:
    """``k`` distinct numbers below ``total`` (all when fewer), sorted: the combinations
    ``--sample`` takes. random.sample as before issue 15, but past what ``len()`` takes."""
    if total < 2**62:
        return sorted(rng.sample(range(total), min(k, total)))
    chosen: set[int] = set()
    while len(chosen) < k:
        chosen.add(rng.randrange(total))
    return sorted(chosen)


def _sample(
    total: int,
    sample: int,
    nth: Callable[[int], Row],
    excluded: Callable[[Block, tuple[int, ...]], bool] | None,
    blocks: Blocks,
    rng: random.Random,
) -> list[Row]:
    """``--sample N`` of a document: N combinations its excludes keep, in plan order."""
    if excluded is None:
        return [nth(i) for i in _pick(rng, total, sample)]

    def kept(i: int) -> Row | None:
        row = nth(i)
        return None if excluded(blocks.blocks[row[0]], row[1]) else row

    if total <= max(4 * sample, 10_000):  # small: every kept combination is a candidate
        candidates = [(i, row) for i in range(total) if (row := kept(i)) is not None]
        picked = rng.sample(candidates, min(sample, len(candidates)))
        return [row for _, row in sorted(picked, key=operator.itemgetter(0))]
    chosen: dict[int, Row] = {}
    seen: set[int] = set()
    for _ in range(sample * MAX_DRAWS_PER_SAMPLE):  # huge: draw, drop what is excluded, draw again
        if len(chosen) == sample:
            break
        i = rng.randrange(total)
        if i not in seen:
            seen.add(i)
            if (row := kept(i)) is not None:
                chosen[i] = row
    return [chosen[i] for i in sorted(chosen)]


def _draw(
    spec: Spec,
    grid: Grid,
    n: int,
    blocks: Blocks,
    excluded: Callable[[Block, tuple[int, ...]], bool] | None,
    rng: random.Random,
) -> list[Row]:
    """``n`` combinations of a ``_samples`` document, drawn (lists uniformly, distributions
    as stated, a branch uniformly among its values); excluded ones are drawn again."""
    space = Space(grid.body)
    rows: list[Row] = []
    budget = n * MAX_DRAWS_PER_SAMPLE
    while len(rows) < n:
        row = blocks.row(_ordered(space.draw(rng)))
        if excluded is None or not excluded(blocks.blocks[row[0]], row[1]):
            rows.append(row)
            continue
        budget -= 1
        if budget <= 0:
            raise SpecError(
                f"'_exclude' rejects nearly every draw of grid {grid.index}: {len(rows)} of "
                f"{n} samples after {n * MAX_DRAWS_PER_SAMPLE} rejected draws",
                file=spec.path,
                line=grid.locations.get("_exclude", grid.line),
                key="_exclude",
                hint="exclude less, or widen the distributions",
            )
    return rows


# --------------------------------------------------------------------------- _exclude
class Excluder:
    """Whether a combination matches an ``_exclude`` entry: each entry's keys are looked up
    in the combination's written params, then what its aliases set, then the defaults."""

    def __init__(self, grid: Grid, aliases: dict[str, dict[str, dict[str, Value]]], fill: dict[str, Value]):
        self.entries = grid.exclude
        self.aliases = aliases
        self.fill = fill  # defaults, both as written (alias names) and as expanded
        self._compiled: dict[int, list[list[Check]]] = {}

    def __call__(self, block: Block, combo: tuple[int, ...]) -> bool:
        compiled = self._compiled.get(id(block))
        if compiled is None:
            compiled = self._compiled[id(block)] = self._compile(block)
        for entry in compiled:
            for col, memo, allowed, key in entry:
                vi = combo[col]
                hit = memo.get(vi)
                if hit is None:
                    hit = memo[vi] = self._matches(block, col, vi, key, allowed)
                if not hit:
                    break
            else:
                return True
        return False

    def _compile(self, block: Block) -> list[list[Check]]:
        """Per entry, the columns to check; keys no column sets are settled here, once."""
        out = []
        cols = {k: i for i, k in enumerate(block.keys)}
        targets = {t: cols[a] for a in block.keys if a in self.aliases for t in _targets(self.aliases[a])}
        for entry in self.entries:
            checks: list[Check] = []
            possible = True
            for key, allowed in entry:
                col = cols.get(key, targets.get(key))
                if col is not None:
                    checks.append((col, {}, allowed, key))
                elif key not in self.fill or not any(same(self.fill[key], v) for v in allowed):
                    possible = False
            if possible:
                out.append(checks)
        return out

    def _matches(self, block: Block, col: int, vi: int, key: str, allowed: tuple[Value, ...]) -> bool:
        value = block.values[col][vi]
        if block.keys[col] != key:  # an alias column: what its choice sets
            value = self.aliases[block.keys[col]][choice_key(value)][key]
        return any(same(value, v) for v in allowed)


def _targets(choices: dict[str, dict[str, Value]]) -> Iterable[str]:
    return next(iter(choices.values()))
