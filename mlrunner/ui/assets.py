"""The UI's own static files (``mlrunner/ui/static/``) and Plotly.js as the installed
``plotly`` package ships it: found on disk, never fetched. Which optional packages the UI
needs, and the error that says how to install them."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from mlrunner.errors import MlrunnerError

STATIC = Path(__file__).resolve().parent / "static"
# The page's scripts, in load order (each adds to the one ``MLR`` namespace).
SCRIPTS = ("core.js", "table.js", "plots.js", "runs.js", "detail.js", "experiments.js", "main.js")
STYLES = ("app.css",)
SERVER_PACKAGES = ("starlette", "uvicorn", "plotly")
REPORT_PACKAGES = ("plotly",)


class MissingExtra(MlrunnerError):
    """An optional package of ``mlrunner[ui]`` is not installed."""

    exit_code = 1


def require(packages: tuple[str, ...], what: str) -> None:
    """MissingExtra naming every one of ``packages`` that cannot be imported."""
    missing = [p for p in packages if _absent(p)]
    if missing:
        raise MissingExtra(
            f"{what} needs the optional package{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            hint="install mlrunner[ui]: pip install 'mlrunner[ui]'",
        )


def _absent(package: str) -> bool:
    if package in sys.modules:
        return sys.modules[package] is None  # None: blocked (tests do so)
    try:
        return importlib.util.find_spec(package) is None
    except (ImportError, ValueError):
        return True


def plotly_js() -> Path:
    """``plotly.min.js`` inside the installed ``plotly`` package (not imported)."""
    spec = importlib.util.find_spec("plotly")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    raise MissingExtra(
        "plotly.min.js was not found in the installed plotly package",
        hint="reinstall it: pip install --force-reinstall 'mlrunner[ui]'",
    )


def static_file(name: str) -> Path | None:
    """The UI file ``name`` (a plain file name under static/), or None."""
    if name == "plotly.min.js":
        return plotly_js()
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    path = STATIC / name
    return path if path.is_file() else None


def version_tag() -> str:
    """Changes whenever a static file does (cache busting for ``?v=``)."""
    stamps = [int(p.stat().st_mtime) for p in STATIC.iterdir() if p.is_file()]
    try:
        stamps.append(int(os.stat(plotly_js()).st_mtime))
    except MissingExtra:
        pass
    return f"{max(stamps, default=0):x}"
