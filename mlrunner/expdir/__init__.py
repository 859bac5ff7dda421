"""An experiment dir, the 0.5.9 compatibility contract, in one place.

- ``names``: file names (``param``, ``stat``), log names ``log.<cmd>.<time>``, the
  ``stat`` words;
- ``yamlfast``: the YAML of ``param`` files both ways (PyYAML's dumper and loader, and the
  fast writer and reader of the common shape, which share one set of rules);
- ``files``: the ``param`` and ``stat`` files (atomic writes, :func:`read_param`, the one
  reader of ``param``; :class:`Writer`: delayed ``running`` stats).

``git.json`` / ``git.patch`` are written and read by :mod:`mlrunner.snapshot`.
"""

from mlrunner.expdir import yamlfast
from mlrunner.expdir.files import (
    LOG_TAIL_BYTES,
    Writer,
    atomic_write,
    log_tail,
    param_text,
    read_param,
    read_stat,
    stat_text,
    update_stat,
)
from mlrunner.expdir.names import (
    LOG_PREFIX,
    PARAM_FILE,
    STAT_FILE,
    STAT_WORDS,
    log_name,
    log_names,
    stat_word,
)
from mlrunner.expdir.yamlfast import dump_yaml, load_yaml

__all__ = [
    "LOG_TAIL_BYTES",
    "LOG_PREFIX",
    "PARAM_FILE",
    "STAT_FILE",
    "STAT_WORDS",
    "Writer",
    "atomic_write",
    "dump_yaml",
    "load_yaml",
    "log_tail",
    "log_name",
    "log_names",
    "param_text",
    "read_param",
    "read_stat",
    "stat_text",
    "stat_word",
    "update_stat",
    "yamlfast",
]
