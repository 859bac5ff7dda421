"""The one HTML page of the UI: a shell that the scripts fill in from the JSON API. Served
at every page route (``/``, ``/runs/<id>``, ``/experiments``, ``/experiments/<name>``,
``/compare``), and inlined with its data into the report. Everything variable in it is
escaped; the content itself is made by the scripts with ``textContent``."""

from __future__ import annotations

import base64
import hashlib
import html

from mlrunner.ui import assets

# Scripts only from this server; styles too, plus the inline ones Plotly.js sets on its
# elements; no plugin, no frame, no form posting anywhere.
SERVER_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _head(title: str, styles: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{html.escape(title)}</title>{styles}</head>'
    )


def _body(mode: str, output: str, plotly: str, scripts: str) -> str:
    return (
        f'<body data-mode="{mode}" data-output="{html.escape(output, quote=True)}" '
        f'data-plotly="{html.escape(plotly, quote=True)}">'
        '<header class="top"><a class="brand" href="/" data-nav="/">mlrunner</a>'
        '<nav><a href="/" data-nav="/">Runs</a><a href="/experiments" data-nav="/experiments">Experiments</a>'
        '</nav><span class="where" id="where"></span></header>'
        '<main id="app"><p class="muted">Loading...</p></main>'
        f"{scripts}</body></html>\n"
    )


def shell(output: str) -> str:
    """The page the server sends for every page route."""
    tag = assets.version_tag()
    styles = "".join(f'<link rel="stylesheet" href="/static/{s}?v={tag}">' for s in assets.STYLES)
    scripts = "".join(f'<script src="/static/{s}?v={tag}"></script>' for s in assets.SCRIPTS)
    return _head(f"mlrunner: {output}", styles) + _body(
        "server", output, f"/static/plotly.min.js?v={tag}", scripts
    )


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def json_script(data_json: str) -> str:
    """JSON text safe inside ``<script type="application/json">``: no ``</``, no ``<!--``."""
    return data_json.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def report_page(output: str, data_json: str) -> str:
    """The self-contained report: styles, Plotly.js, the scripts and the data inline; a
    Content-Security-Policy that allows exactly those scripts and no network at all."""
    css = "\n".join((assets.STATIC / s).read_text(encoding="utf-8") for s in assets.STYLES)
    code = [assets.plotly_js().read_text(encoding="utf-8")]
    code += [(assets.STATIC / s).read_text(encoding="utf-8") for s in assets.SCRIPTS]
    code = [c.replace("</script", "<\\/script") for c in code]
    csp = (
        f"default-src 'none'; script-src {' '.join(_sha256(c) for c in code)}; "
        "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; connect-src 'none'; "
        "base-uri 'none'; form-action 'none'"
    )
    head = _head(f"mlrunner report: {output}", f"<style>{css}</style>").replace(
        "<title>",
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(csp, quote=True)}"><title>',
        1,
    )
    scripts = f'<script type="application/json" id="mlr-data">{json_script(data_json)}</script>'
    scripts += "".join(f"<script>{c}</script>" for c in code)
    return head + _body("report", output, "", scripts)
