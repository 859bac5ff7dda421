"""The environment fingerprint of a run (storage layer, beside ``snapshot``): Python
version and executable, platform, installed distributions, GPUs and driver, CPU, host.

Taken once per run (``probe``), written as the run's ``env.json`` and hard-linked into each
experiment dir like ``git.patch`` (``files``); its hash goes into the ledger.
"""

from mlrunner.envinfo.files import ENV_NAME, KEYS, diff_env, env_hash, env_text, link_env, read_env, write_env
from mlrunner.envinfo.probe import EnvProbe, fingerprint

__all__ = [
    "ENV_NAME",
    "KEYS",
    "EnvProbe",
    "diff_env",
    "env_hash",
    "env_text",
    "fingerprint",
    "link_env",
    "read_env",
    "write_env",
]
