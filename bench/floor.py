"""The dispatch floor: what any runner that keeps a log and a state file per command pays.

A thread pool of W workers runs N commands ``bash -c true``; each command gets its own
directory, its output goes to a log file there, and its exit status is written to a
state file atomically (temp file + ``os.replace``). No ledger, no YAML, no git.

    python bench/floor.py N W DIR
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


def one(root: str, i: int) -> int:
    exp = os.path.join(root, f"e{i}")
    os.makedirs(exp)
    with open(os.path.join(exp, "log"), "wb") as log:
        rc = subprocess.call(["bash", "-c", f"true {i}"], stdout=log, stderr=subprocess.STDOUT)
    tmp = os.path.join(exp, "state.tmp")
    with open(tmp, "w") as f:
        json.dump({"command": "main", "status": "finished" if rc == 0 else "failed", "exit_code": rc}, f)
    os.replace(tmp, os.path.join(exp, "state"))
    return rc


def main() -> int:
    n, w, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    os.makedirs(root, exist_ok=True)
    with ThreadPoolExecutor(w) as pool:
        codes = list(pool.map(lambda i: one(root, i), range(n)))
    return 1 if any(codes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
