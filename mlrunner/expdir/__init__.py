"""An experiment dir, the 0.5.9 compatibility contract: the ``param`` and ``stat`` files
(``files``: atomic writes, the fast writer, delayed 'running' stats) and the fast reader of
the ``param`` shape mlrunner writes (``fastyaml``)."""

from mlrunner.expdir import fastyaml
from mlrunner.expdir.files import (
    PARAM_FILE,
    STAT_FILE,
    Writer,
    atomic_write,
    dump_yaml,
    load_yaml,
    param_text,
    read_param,
    read_stat,
    stat_text,
)

__all__ = [
    "PARAM_FILE",
    "STAT_FILE",
    "Writer",
    "atomic_write",
    "dump_yaml",
    "fastyaml",
    "load_yaml",
    "param_text",
    "read_param",
    "read_stat",
    "stat_text",
]
