"""The HTTP side: the JSON API (``/api/...``), the page routes and the static files, as a
Starlette application over :class:`~mlrunner.ui.data.UiData`. Read-only: every route is
GET (and HEAD); anything else is 405. Errors are JSON: 404 for what does not exist (an
unknown run or experiment, or a name that would leave the output root), 400 for a bad
query. Security headers on every response; requests naming a foreign host are refused
(a DNS-rebinding page cannot read the logs)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from mlrunner.errors import MlrunnerError, UsageError
from mlrunner.ui import assets, pages
from mlrunner.ui.data import NotFound, UiData, dumps, parse_summary
from mlrunner.ui.hosts import host_of, is_loopback

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": pages.SERVER_CSP,
}


def _json(data: Any, status: int = 200) -> Response:
    return Response(dumps(data), status, media_type="application/json", headers={"Cache-Control": "no-store"})


def _error(status: int, message: str) -> Response:
    return _json({"error": message, "status": status}, status)


def _int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"'{name}' must be a whole number of bytes, got '{value}'") from None


def build_app(data: UiData, *, allowed_hosts: tuple[str, ...] | None = None) -> Starlette:
    """The application serving ``data``; ``allowed_hosts``: the Host names accepted (None:
    any, for a server bound to a non-loopback address)."""

    async def call(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await run_in_threadpool(fn, *args, **kw)

    async def runs(request: Request) -> Response:
        return _json(await call(data.runs))

    async def run(request: Request) -> Response:
        return _json(await call(data.run, request.path_params["run_id"]))

    async def run_attempts(request: Request) -> Response:
        return _json(await call(data.run_attempts, request.path_params["run_id"]))

    async def live(request: Request) -> Response:
        return _json(await call(data.live))

    async def experiments(request: Request) -> Response:
        summary = parse_summary(request.query_params.getlist("summary"))
        table = await call(data.table, summary)
        headers = {
            "Cache-Control": "no-cache",
            "ETag": table.etag,
            "Vary": "Accept-Encoding",
            "X-Table-As-Of": f"{table.as_of:.3f}",
        }
        if request.headers.get("if-none-match") == table.etag:
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(table.gzipped, media_type="application/json", headers=headers)
        return Response(table.body, media_type="application/json", headers=headers)

    async def columns(request: Request) -> Response:
        summary = parse_summary(request.query_params.getlist("summary"))
        table = await call(data.table, summary)
        return _json({**table.meta, "as_of": table.as_of, "stale": not data.is_fresh(table)})

    async def curves(request: Request) -> Response:
        metric = request.query_params.get("metric")
        if not metric:
            raise UsageError("which metric? /api/curves?metric=NAME")
        agg = [a for a in request.query_params.getlist("agg") if a]
        return _json(await call(data.curves, metric, agg))

    async def detail(request: Request) -> Response:
        return _json(await call(data.detail, request.path_params["name"]))

    async def compare(request: Request) -> Response:
        a, b = request.query_params.get("a"), request.query_params.get("b")
        if not a or not b:
            raise UsageError("compare needs two experiments: /api/compare?a=NAME&b=NAME")
        return _json(await call(data.compare, a, b))

    async def log(request: Request) -> Response:
        piece = await call(
            data.log,
            request.path_params["name"],
            request.path_params["command"],
            offset=_int(request, "offset"),
            tail=_int(request, "tail"),
            limit=_int(request, "limit"),
        )
        headers = {
            "Cache-Control": "no-store",
            "X-Log-Name": piece.name.encode("ascii", "backslashreplace").decode(),
            "X-Log-Start": str(piece.start),
            "X-Log-End": str(piece.end),
            "X-Log-Size": str(piece.size),
            "Content-Length": str(piece.end - piece.start),
        }
        return StreamingResponse(piece.chunks(), media_type="text/plain; charset=utf-8", headers=headers)

    async def api_unknown(request: Request) -> Response:
        return _error(404, f"no such API route: {request.url.path}")

    async def page(request: Request) -> Response:
        params = request.path_params
        found = True
        if "run_id" in params:
            found = await call(data.has_run, params["run_id"])
        elif "name" in params:
            found = await call(data.has_experiment, params["name"])
        return HTMLResponse(
            pages.shell(data.output), 200 if found else 404, headers={"Cache-Control": "no-cache"}
        )

    async def static(request: Request) -> Response:
        path = assets.static_file(request.path_params["file"])
        if path is None:
            return _error(404, "no such file")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, str(exc) or "not found")

    async def mistake(request: Request, exc: Exception) -> Response:
        return _error(404 if isinstance(exc, NotFound) else 400 if exc_code(exc) == 2 else 500, str(exc))

    routes = [
        Route("/api/runs", runs),
        Route("/api/runs/{run_id:int}", run),
        Route("/api/runs/{run_id:int}/attempts", run_attempts),
        Route("/api/live", live),
        Route("/api/experiments", experiments),
        Route("/api/columns", columns),
        Route("/api/curves", curves),
        Route("/api/compare", compare),
        Route("/api/experiments/{name}", detail),
        Route("/api/experiments/{name}/log/{command}", log),
        Route("/api/{rest:path}", api_unknown),
        Route("/static/{file}", static),
        Route("/", page),
        Route("/runs/{run_id:int}", page),
        Route("/experiments", page),
        Route("/experiments/{name}", page),
        Route("/compare", page),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, MlrunnerError: mistake})
    app.add_middleware(_Guard, allowed_hosts=allowed_hosts)
    return app


def exc_code(exc: Exception) -> int:
    return exc.exit_code if isinstance(exc, MlrunnerError) else 1


class _Guard:
    """Security headers on every response; only GET/HEAD; only the allowed Host names."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...] | None) -> None:
        self.app = app
        self.allowed = allowed_hosts

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = None
        if scope["method"] not in ("GET", "HEAD"):
            refusal = _error(405, "read-only: only GET and HEAD")
            refusal.headers["Allow"] = "GET, HEAD"
        elif self.allowed is not None:
            host = host_of(dict(scope["headers"]).get(b"host", b"").decode("latin-1"))
            if host not in self.allowed and not is_loopback(host):
                refusal = _error(403, f"host '{host}' is not served here")
        if refusal is not None:
            for k, v in HEADERS.items():
                refusal.headers[k] = v
            await refusal(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                have = {k.lower() for k, _ in raw}
                raw += [
                    (k.lower().encode(), v.encode())
                    for k, v in HEADERS.items()
                    if k.lower().encode() not in have
                ]
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, with_headers)
