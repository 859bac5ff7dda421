"""The targets of ``notify:`` as apprise sees them: loaded once when a run starts (a target
apprise does not know is a params.yaml error there), sent to from the notifier's thread.

apprise is imported here only, and only for a params.yaml with a ``notify:`` section.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from mlrunner.errors import SpecError, did_you_mean
from mlrunner.spec import NotifySpec

INSTALL_HINT = "pip install 'mlrunner[notify]' (or remove the notify: section)"
WIKI = "https://github.com/caronc/apprise/wiki"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LOG_HEAD = re.compile(r"^\S+ \S+ - \w+ - ")  # apprise's log line prefix: date time - LEVEL -


@dataclass(frozen=True)
class Target:
    """One notification target: ``shown`` is its URL with secrets hidden and without its
    options (for warnings)."""

    shown: str
    server: Any  # an apprise plugin instance

    def send(self, title: str, body: str) -> str | None:
        """Send one message; None when it went out, else why not (apprise's words)."""
        import apprise

        capture: Any = apprise.LogCapture  # untyped in apprise
        with capture(level=apprise.logging.WARNING) as logs:
            sent = self.server.notify(body=body, title=title, body_format=apprise.NotifyFormat.TEXT)
        if sent:
            return None
        lines = [_LOG_HEAD.sub("", line).strip() for line in logs.getvalue().splitlines()]
        return next((line for line in reversed(lines) if line), "apprise reported a failure")


def load_targets(config: NotifySpec, path: str) -> list[Target]:
    """Every target of ``config`` (``${VAR}`` from the environment), checked by apprise.
    SpecError with the target's line: apprise missing, a variable unset, a URL apprise
    does not know (did you mean another schema?) or cannot use on this machine."""
    first = config.lines[0] if config.lines else None
    try:
        import apprise
    except ImportError:
        raise SpecError(
            "notifications need the apprise library, which is not installed",
            file=path,
            line=first,
            key="notify",
            hint=INSTALL_HINT,
        ) from None
    targets = []
    for i, url in enumerate(config.targets):
        line = config.lines[i] if i < len(config.lines) else first
        key = f"notify.targets[{i}]"
        expanded = _expand(url, path, line, key)
        server: Any = apprise.Apprise.instantiate(expanded, suppress_exceptions=True)
        if server is None:
            message, hint = _unusable(apprise, url)
            raise SpecError(message, file=path, line=line, key=key, hint=hint)
        targets.append(Target(str(server.url(privacy=True)).split("?", 1)[0], server))
    return targets


def _expand(url: str, path: str, line: int | None, key: str) -> str:
    """``${NAME}`` -> the environment's value (secrets stay out of params.yaml)."""

    def value(m: re.Match[str]) -> str:
        if m[1] not in os.environ:
            raise SpecError(
                f"environment variable {m[1]} is not set (the target uses ${{{m[1]}}})",
                file=path,
                line=line,
                key=key,
                hint=f"export {m[1]}=... before `run`",
            )
        return os.environ[m[1]]

    return _VAR.sub(value, url)


def _unusable(apprise: Any, url: str) -> tuple[str, str]:
    """Why apprise cannot use ``url`` (as written, never expanded), and a hint."""
    schema = url.split("://", 1)[0].lower()
    services: dict[str, tuple[str, bool]] = {}
    for s in apprise.Apprise().details(show_disabled=True)["schemas"]:
        for p in (*(s.get("protocols") or ()), *(s.get("secure_protocols") or ())):
            services[str(p).lower()] = (str(s["service_name"]), bool(s["enabled"]))
    if schema in services:
        name, enabled = services[schema]
        if not enabled:
            return (
                f"apprise knows {schema}:// ({name}) but cannot use it on this machine",
                "it needs a library or a desktop service that is missing here; pick another target",
            )
        return f"{url!r} is not a valid {name} URL for apprise", f"see {WIKI} for its form"
    guess = did_you_mean(f"{schema}://", [f"{p}://" for p in services])
    return (
        f"{schema}:// is not a notification service apprise knows",
        (guess + " " if guess else "")
        + f"e.g. ntfy://TOPIC, json://HOST:PORT/PATH, mailto://USER:PASS@HOST, slack://...; see {WIKI}",
    )
