"""Taking the environment fingerprint: one child process of the ``python`` on PATH (the
interpreter the commands run), ``nvidia-smi`` when present, ``/proc/cpuinfo``, the host name.

The two child processes start together (:class:`EnvProbe`) and are collected later, so a
caller can overlap them with other work (the runner takes its git snapshot meanwhile).
Never raises for a missing or broken tool: what could not be found is None (or empty) and
the reason is listed under ``errors``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from typing import Any

# Runs in the interpreter on PATH. Names are normalised as PEP 503 does (``Scikit_Learn`` ->
# ``scikit-learn``); the first distribution found on sys.path wins, as importlib finds it.
# A ``name-version.dist-info`` directory says both in its name (wheels escape the name, so it
# has no '-'): only the others (egg-info, odd names) have their METADATA parsed, which is what
# made listing 150 packages cost 75 ms.
PROBE_SOURCE = r"""
import json, os, platform, re, sys
packages = {}
try:
    from importlib import metadata
    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for meta in names:
            if not meta.endswith((".dist-info", ".egg-info")):
                continue
            name, _, version = meta[:-10].partition("-")
            if not (name and version[:1].isdigit() and "-" not in version and meta.endswith(".dist-info")):
                dist = metadata.PathDistribution.at(os.path.join(entry or ".", meta))
                name, version = dist.metadata["Name"], dist.version
            if name:
                packages.setdefault(re.sub(r"[-_.]+", "-", name).lower(), version)
except Exception as exc:
    packages = None
    print(f"cannot list the installed packages: {exc}", file=sys.stderr)
print(json.dumps({
    "python": platform.python_version(),
    "executable": sys.executable,
    "platform": platform.platform(),
    "packages": dict(sorted(packages.items())) if packages is not None else None,
}))
"""
PYTHON_NAMES = ("python", "python3")
NVIDIA_QUERY = ("--query-gpu=name,driver_version", "--format=csv,noheader,nounits")
TIMEOUT_S = 30.0


def _spawn(argv: list[str], cwd: str | None) -> subprocess.Popen[str] | str:
    try:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        return f"cannot start {argv[0]}: {exc.strerror or exc}"


def _collect(proc: subprocess.Popen[str] | str | None, what: str, errors: list[str]) -> str | None:
    if proc is None:
        return None
    if isinstance(proc, str):
        errors.append(proc)
        return None
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        errors.append(f"{what} did not answer within {TIMEOUT_S:g} s")
        return None
    if proc.returncode != 0:
        last = (err.strip().splitlines() or ["no message"])[-1]
        errors.append(f"{what} failed (exit {proc.returncode}): {last[:300]}")
        return None
    return out


def cpu_model() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip() or None
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def parse_nvidia(text: str) -> tuple[list[str], str | None]:
    """GPU model names (nvidia-smi's order) and the driver version of the first GPU."""
    gpus: list[str] = []
    driver: str | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        name, _, version = line.rpartition(",")
        if not name:  # one column: a name without a driver
            name, version = version, ""
        gpus.append(name.strip())
        if driver is None and version.strip() and not version.strip().startswith("["):
            driver = version.strip()
    return gpus, driver


class EnvProbe:
    """Starts the probes now; :meth:`result` waits for them and returns the fingerprint.

    ``cwd``: where the commands run (the child ``python`` sees the same ``sys.path``).
    ``path``: the PATH to look tools up in (default: this process's).
    """

    def __init__(self, cwd: str | os.PathLike[str] | None = None, path: str | None = None) -> None:
        self.cwd = os.fspath(cwd) if cwd is not None else None
        self.errors: list[str] = []
        self.python = next((p for n in PYTHON_NAMES if (p := shutil.which(n, path=path))), None)
        self.nvidia_smi = shutil.which("nvidia-smi", path=path)
        self._py = _spawn([self.python, "-c", PROBE_SOURCE], self.cwd) if self.python else None
        self._gpu = _spawn([self.nvidia_smi, *NVIDIA_QUERY], None) if self.nvidia_smi else None
        if self.python is None:
            self.errors.append(f"no {' or '.join(PYTHON_NAMES)} on PATH: the packages are unknown")

    def close(self) -> None:
        """Stop the probes if still running (a run that failed before it needed them)."""
        for proc in (self._py, self._gpu):
            if isinstance(proc, subprocess.Popen) and proc.poll() is None:
                proc.kill()
                proc.communicate()

    def result(self) -> dict[str, Any]:
        """The fingerprint: python, executable, platform, packages, gpus, driver, cpu, host
        (and ``errors`` when a probe failed)."""
        env: dict[str, Any] = {
            "python": None,
            "executable": self.python,
            "platform": None,  # the probe's; platform.platform() here runs `uname -p`
            "packages": {},
            "gpus": [],
            "driver": None,
            "cpu": cpu_model(),
            "host": os.uname().nodename,
        }
        out = _collect(self._py, f"{self.python} (the environment probe)", self.errors)
        if out is not None:
            try:
                found = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                self.errors.append(f"{self.python} gave no readable answer to the environment probe")
            else:
                env["python"] = found.get("python")
                env["executable"] = found.get("executable") or self.python
                env["platform"] = found.get("platform")
                env["packages"] = found.get("packages") or {}
        if not env["platform"]:
            env["platform"] = platform.platform()
        text = _collect(self._gpu, "nvidia-smi", self.errors)
        if text is not None:
            env["gpus"], env["driver"] = parse_nvidia(text)
        if self.errors:
            env["errors"] = list(self.errors)
        return env


def fingerprint(cwd: str | os.PathLike[str] | None = None, path: str | None = None) -> dict[str, Any]:
    """The environment fingerprint of this machine, for commands run from ``cwd``."""
    return EnvProbe(cwd, path).result()
