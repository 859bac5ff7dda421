"""The web view of an output root: ``mlrunner ui`` (a read-only local server) and
``mlrunner report`` (the same views as one self-contained HTML file).

``data`` (what is shown, as plain data; no web framework), ``files`` (experiment dirs and
logs by name, never outside the output root), ``board`` (the ledger's attempts for the
live board and the detail page), ``api`` (the Starlette application), ``pages`` (the HTML
shell), ``assets`` (static files, Plotly.js from the installed ``plotly``), ``server``
(uvicorn on a bound socket), ``report`` (the one-file report). The server's packages
(``mlrunner[ui]``) are imported only by ``api``, ``server`` and ``report``, on use.
"""

from mlrunner.ui.assets import MissingExtra, require
from mlrunner.ui.data import UiData
from mlrunner.ui.files import NotFound
from mlrunner.ui.report import write_report
from mlrunner.ui.server import DEFAULT_HOST, DEFAULT_PORT, Serving, serve

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "MissingExtra",
    "NotFound",
    "Serving",
    "UiData",
    "require",
    "serve",
    "write_report",
]
