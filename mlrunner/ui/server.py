"""``mlrunner ui``: the web view of one output root, served by uvicorn on a socket bound
here first (a port in use is a clear error, ``--port 0`` a free port). Loopback by
default; another address only when asked (the CLI warns). Ctrl-C stops it: uvicorn shuts
down, then the interrupt is raised again for the caller to catch."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from mlrunner.errors import UsageError
from mlrunner.ui import assets
from mlrunner.ui.data import UiData
from mlrunner.ui.hosts import LOOPBACK_NAMES, is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


@dataclass(frozen=True)
class Serving:
    """Where the view is served: ``url``; ``exposed``: bound beyond this machine;
    ``notes``: what the user should know (no ledger yet...)."""

    url: str
    host: str
    port: int
    exposed: bool
    notes: tuple[str, ...] = ()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one); UsageError when the
    address is in use, not this machine's, or not an address at all."""
    if not 0 <= port <= 65535:
        raise UsageError(f"port {port} is not a port number (0-65535)", key="--port")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"cannot serve on host '{host}': {exc.strerror}", key="--host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48):  # EADDRINUSE (Linux, macOS)
            raise UsageError(
                f"port {port} on {host} is in use",
                key="--port",
                hint="pick another with --port N, or --port 0 for a free one",
            ) from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}", key="--host") from None
    sock.set_inheritable(False)
    return sock


def url_of(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def serve(
    output: str | os.PathLike[str],
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    on_ready: Callable[[Serving], None] | None = None,
    fresh_s: float = 2.0,
) -> None:
    """Serve the view of ``output`` until SIGINT/SIGTERM (then re-raised by uvicorn:
    KeyboardInterrupt for SIGINT). ``on_ready`` gets where, once the socket listens."""
    assets.require(assets.SERVER_PACKAGES, "mlrunner ui")
    data = UiData(output, fresh_s=fresh_s)
    sock = bind(host, port)
    import uvicorn

    from mlrunner.ui.api import build_app

    exposed = not is_loopback(host)
    bound_port = sock.getsockname()[1]
    allowed = None if exposed else LOOPBACK_NAMES
    config = uvicorn.Config(
        build_app(data, allowed_hosts=allowed),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
        server_header=False,
    )
    server = uvicorn.Server(config)
    notes: tuple[str, ...] = ()
    if not data.has_ledger():
        notes = (
            f"no ledger under '{data.output}' yet: the runs and their boards are empty until a sweep "
            f"runs there (`run -o {data.output}`); experiment dirs are shown all the same",
        )
    if on_ready is not None:
        on_ready(Serving(url_of(host, bound_port), host, bound_port, exposed, notes))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        data.close()
