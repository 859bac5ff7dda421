"""The value generators of a grid document: ``range``, ``linspace``, ``geomspace``,
``logspace`` (finite, deterministic lists) and the random distributions ``uniform``,
``loguniform``, ``randint``, ``normal``, ``choice`` (drawn in a ``_samples`` document).

A :class:`Gen` is never expanded to know its length: ``Gen.size`` is arithmetic (not
``len()``, which stops at 2**63) and :meth:`Gen.at` gives one value, so a
``{range: [0, 1e12]}`` costs nothing until the plan asks for its values (and the plan
refuses a sweep that big before it does). Generated floats
are rounded to 12 significant digits (:func:`round12`), so ``0.30000000000000004`` never
reaches a command or a directory name. No numpy: the numbers are numpy's formulas, and the
tests compare them with numpy.

``check_gen`` / ``check_dist`` validate the arguments; they raise ``ValueError`` with a
sentence the spec reader turns into a located :class:`~mlrunner.errors.SpecError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from mlrunner.spec.reader import Value

if TYPE_CHECKING:  # both imported where used: neither is needed to start the CLI
    import random
    from decimal import Decimal

Number: TypeAlias = "int | float"

GENERATORS = ("range", "linspace", "geomspace", "logspace")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "normal", "choice")
FORMS = {
    "range": "{range: [start, stop]} or {range: [start, stop, step]} (stop excluded)",
    "linspace": "{linspace: [start, stop, num]} (num values, both ends included)",
    "geomspace": "{geomspace: [start, stop, num]} (num values, evenly spaced on a log scale)",
    "logspace": "{logspace: [start_exp, stop_exp, num]} (10**start_exp .. 10**stop_exp)",
    "uniform": "{uniform: [a, b]} (a float in [a, b]; needs _samples: N)",
    "loguniform": "{loguniform: [a, b]} (0 < a < b; log-uniform in [a, b]; needs _samples: N)",
    "randint": "{randint: [a, b]} (an integer, a <= n < b; needs _samples: N)",
    "normal": "{normal: [mean, std]} (needs _samples: N)",
    "choice": "{choice: [v1, v2, ...]} (one of the values; needs _samples: N)",
}
MAX_EXPONENT = 308  # 10.0 ** 309 overflows a float


def round12(x: float) -> float:
    """``x`` rounded to 12 significant digits (``0.1 + 0.2`` -> ``0.3``)."""
    return float(f"{x:.12g}")


def valid_forms() -> str:
    return "; ".join(FORMS.values())


def _number(v: Value, what: str) -> Number:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{what} must be a number, not {v!r}")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, not {v!r}")
    return v


def _count(v: Value, what: str = "num") -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"the count '{what}' must be an integer, not {v!r}")
    if v < 1:
        raise ValueError(f"the count '{what}' must be at least 1, not {v}")
    return v


def _dec(v: Number) -> Decimal:
    """The number as the decimal it was written as (0.1 is 0.1, not 0.1000000000000000055...)."""
    from decimal import Decimal

    return Decimal(v) if isinstance(v, int) else Decimal(repr(v))


# --------------------------------------------------------------------------- finite lists
@dataclass(frozen=True)
class Gen:
    """A finite generated list: ``size`` values, ``at(i)`` the i-th."""

    kind: str  # one of GENERATORS
    args: tuple[Number, ...]
    size: int

    def at(self, i: int) -> Value:
        if not 0 <= i < self.size:
            raise IndexError(i)
        if self.kind == "range":
            return _range_at(self.args, i)
        if self.kind == "linspace":
            return round12(_linspace_at(self.args, i))
        if self.kind == "logspace":
            return round12(10.0 ** _linspace_at(self.args, i))
        return round12(_geomspace_at(self.args, i))

    def values(self) -> tuple[Value, ...]:
        return tuple(self.at(i) for i in range(self.size))

    def __repr__(self) -> str:
        return f"{{{self.kind}: {list(self.args)}}}"


def _range_at(args: tuple[Number, ...], i: int) -> Value:
    start, _, step = args
    if isinstance(start, int) and isinstance(step, int):
        return start + i * step
    return round12(float(_dec(start) + i * _dec(step)))


def _linspace_at(args: tuple[Number, ...], i: int) -> float:
    start, stop, num = args
    if num == 1:  # numpy: just the start
        return float(start)
    if i == num - 1:
        return float(stop)
    step = (stop - start) / (num - 1)
    return i * step + start


def _geomspace_at(args: tuple[Number, ...], i: int) -> float:
    start, stop, num = args
    if i == 0:
        return float(start)
    if i == num - 1:
        return float(stop)
    sign = -1.0 if start < 0 else 1.0
    lo, hi = math.log10(abs(start)), math.log10(abs(stop))
    return sign * float(10.0 ** _linspace_at((lo, hi, num), i))


def _range_size(start: Number, stop: Number, step: Number) -> int:
    if isinstance(start, int) and isinstance(stop, int) and isinstance(step, int):
        return max(0, -((start - stop) // step))  # len(range(...)), which overflows past 2**63
    from decimal import ROUND_CEILING

    n = (_dec(stop) - _dec(start)) / _dec(step)
    size = max(0, int(n.to_integral_value(rounding=ROUND_CEILING)))
    # rounding to 12 digits may carry the last values onto stop: stop stays excluded
    lo, hi = 0, size  # the first index whose rounded value reaches stop, by bisection
    while lo < hi:
        mid = (lo + hi) // 2
        v = _range_at((start, stop, step), mid)
        assert isinstance(v, float)
        if (v >= stop) if step > 0 else (v <= stop):
            hi = mid
        else:
            lo = mid + 1
    return lo


def check_gen(kind: str, args: Sequence[Value]) -> Gen:
    """A validated generator (ValueError: what is wrong with the arguments)."""
    if kind == "range":
        if len(args) not in (2, 3):
            raise ValueError(f"range takes [start, stop] or [start, stop, step], not {len(args)} values")
        start = _number(args[0], "start")
        stop = _number(args[1], "stop")
        step = _number(args[2], "step") if len(args) == 3 else 1
        if step == 0:
            raise ValueError("the step of a range cannot be 0")
        size = _range_size(start, stop, step)
        if size == 0:
            raise ValueError(f"range {list(args)} gives no value (stop is excluded)")
        return Gen(kind, (start, stop, step), size)
    if len(args) != 3:
        raise ValueError(f"{kind} takes [start, stop, num], not {len(args)} values")
    start = _number(args[0], "start")
    stop = _number(args[1], "stop")
    num = _count(args[2])
    if kind == "logspace" and max(abs(start), abs(stop)) > MAX_EXPONENT:
        raise ValueError(f"logspace exponents must lie within +-{MAX_EXPONENT} (10**309 is no float)")
    if kind == "geomspace" and (start == 0 or stop == 0 or (start < 0) != (stop < 0)):
        raise ValueError("geomspace needs start and stop of the same sign, neither 0")
    return Gen(kind, (start, stop, num), num)


# --------------------------------------------------------------------------- random draws
@dataclass(frozen=True)
class Dist:
    """A random distribution; :meth:`draw` one value (floats rounded, within the bounds)."""

    kind: str  # one of DISTRIBUTIONS
    args: tuple[Value, ...]

    def draw(self, rng: random.Random) -> Value:
        a = self.args
        if self.kind == "choice":
            return a[rng.randrange(len(a))]
        if self.kind == "randint":
            assert isinstance(a[0], int) and isinstance(a[1], int)
            return rng.randrange(a[0], a[1])
        x, y = float(a[0]), float(a[1])
        if self.kind == "normal":
            return round12(rng.gauss(x, y))
        if self.kind == "uniform":
            v = rng.uniform(x, y)
        else:
            v = math.exp(rng.uniform(math.log(x), math.log(y)))
        return min(max(round12(v), round12(x)), round12(y))

    def __repr__(self) -> str:
        return f"{{{self.kind}: {list(self.args)}}}"


def check_dist(kind: str, args: Sequence[Value]) -> Dist:
    """A validated distribution (ValueError: what is wrong with the arguments)."""
    if kind == "choice":
        if not args:
            raise ValueError("choice needs at least one value")
        return Dist(kind, tuple(args))
    if len(args) != 2:
        raise ValueError(f"{kind} takes two values, not {len(args)}")
    if kind == "randint":
        a, b = args
        if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, int) or not isinstance(b, int):
            raise ValueError(f"randint takes two integers, not {list(args)}")
        if a >= b:
            raise ValueError(f"randint [{a}, {b}] is empty: b is excluded, so a must be < b")
        return Dist(kind, (a, b))
    x = _number(args[0], "the first value")
    y = _number(args[1], "the second value")
    if kind == "normal":
        if y < 0:
            raise ValueError(f"the std of a normal cannot be negative ({y})")
    elif x > y:
        raise ValueError(f"{kind} [{x}, {y}]: the lower bound comes first")
    elif kind == "loguniform" and x <= 0:
        raise ValueError(f"loguniform needs 0 < a, not {x}")
    return Dist(kind, (x, y))
