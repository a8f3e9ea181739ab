"""The serving environment: a separate virtual environment holding the Triton server nvidia-pytriton ships.

Why separate: that Triton build (2.51, Python backend only) returns empty outputs under numpy 2, which
the main environment needs; its Python models also need onnxruntime and tokenizers, but not torch.
`build_serve_environment` makes it once (≈ 1 minute, ≈ 0.5 GB) and writes a stamp file last, so a
half-built folder is never taken for a usable one; `ServeEnvironment.open` reads that stamp.

It also lays out the backends folder Triton expects (`backends/python/` with the backend library,
its Python utilities and the stub built for this environment's Python version), which the wheel
keeps in separate places.

Command line (what scripts/setup_serve_env.sh runs): `python -m plmops.infra.serving.environment [VENV]`.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_VENV = REPO_ROOT / ".venv-serve"
VENV_VARIABLE = "PLMOPS_SERVE_VENV"
STAMP = ".plmops-serve.json"
# Pinned: versions that install together with numpy < 2 and were run with this Triton build.
SERVE_REQUIREMENTS = ("nvidia-pytriton==0.7.0", "numpy==1.26.4", "onnxruntime==1.32.0", "tokenizers==0.23.3")

_PROBE = """
import json, sys, sysconfig, numpy, onnxruntime, tokenizers, pytriton
print(json.dumps({
    "python_version": f"{sys.version_info[0]}.{sys.version_info[1]}",
    "libdir": sysconfig.get_config_var("LIBDIR"),
    "site_packages": sysconfig.get_paths()["purelib"],
    "versions": {"numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__,
                 "tokenizers": tokenizers.__version__},
}))
"""


class ServeEnvironmentError(RuntimeError):
    """The serving environment is missing, half-built or cannot be built; the message says how to fix it."""


@dataclass(frozen=True)
class ServeEnvironment:
    venv: Path
    python_version: str  # "3.11": picks the Python backend stub
    libdir: Path  # holds this Python's libpython, which the stub must load (not the system's copy)
    site_packages: Path

    @classmethod
    def open(cls, venv: str | Path | None = None) -> ServeEnvironment:
        """The built environment at `venv`, $PLMOPS_SERVE_VENV or the repository's .venv-serve."""
        venv = Path(venv or os.environ.get(VENV_VARIABLE) or DEFAULT_VENV)
        stamp = venv / STAMP
        if not stamp.is_file():
            raise ServeEnvironmentError(
                f"{venv}: no serving environment here (or a half-built one); build it with "
                f"`bash scripts/setup_serve_env.sh {venv}`"
            )
        info = json.loads(stamp.read_text(encoding="utf-8"))
        env = cls(venv, info["python_version"], Path(info["libdir"]), Path(info["site_packages"]))
        if not env.tritonserver.is_file():
            raise ServeEnvironmentError(f"{env.tritonserver}: missing although {stamp} exists; rebuild {venv}")
        return env

    @property
    def triton_root(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def tritonserver(self) -> Path:
        return self.triton_root / "bin" / "tritonserver"

    @property
    def backend_directory(self) -> Path:
        return self.venv / "triton-backends"

    @property
    def library_path(self) -> list[Path]:
        """LD_LIBRARY_PATH entries: our libpython first, then the wheel's bundled libraries."""
        return [self.libdir, self.site_packages / "nvidia_pytriton.libs"]

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def build_serve_environment(
    venv: str | Path | None = None,
    *,
    python: str | None = None,
    requirements: Sequence[str] = SERVE_REQUIREMENTS,
    rebuild: bool = False,
) -> ServeEnvironment:
    """Create the serving environment unless a complete one exists; safe to call from several processes.

    `python` is the interpreter to base it on (default: this one's base interpreter); it must have a
    shared libpython and a version nvidia-pytriton has a stub for (3.8 to 3.13).
    """
    venv = Path(venv or os.environ.get(VENV_VARIABLE) or DEFAULT_VENV)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second builder waits, then finds the stamp
        if (venv / STAMP).is_file() and not rebuild:
            return ServeEnvironment.open(venv)
        started = time.monotonic()
        _remove_partial(venv)
        base = python or getattr(sys, "_base_executable", sys.executable)
        _run([base, "-m", "venv", str(venv)], "create the virtual environment")
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              *requirements], "install " + " ".join(requirements))
        info = json.loads(_run([str(venv / "bin" / "python"), "-c", _PROBE], "check the installed packages"))
        if not info["versions"]["numpy"].startswith("1."):
            raise ServeEnvironmentError(f"{venv}: numpy {info['versions']['numpy']} installed; Triton 2.51 needs < 2")
        env = ServeEnvironment(venv, info["python_version"], Path(info["libdir"]), Path(info["site_packages"]))
        _lay_out_backends(env)
        info |= {"requirements": list(requirements), "build_seconds": round(time.monotonic() - started, 1)}
        (venv / STAMP).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        logger.info("built the serving environment %s in %.0f s", venv, info["build_seconds"])
        return env


def _remove_partial(venv: Path) -> None:
    """Remove a previous attempt, but only if it is a virtual environment (never an unrelated folder)."""
    if not venv.exists():
        return
    if not (venv / "pyvenv.cfg").is_file():
        raise ServeEnvironmentError(f"{venv} exists and is not a virtual environment; move it away first")
    shutil.rmtree(venv)


def _run(command: list[str], what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise ServeEnvironmentError(f"could not {what} (exit {result.returncode}):\n{tail}")
    return result.stdout


def _lay_out_backends(env: ServeEnvironment) -> None:
    stub = env.triton_root / "python_backend_stubs" / env.python_version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServeEnvironmentError(f"nvidia-pytriton has no Python backend stub for Python {env.python_version}")
    target = env.backend_directory / "python"
    target.mkdir(parents=True, exist_ok=True)
    source = env.triton_root / "backends" / "python"
    for path in (source / "libtriton_python.so", source / "triton_python_backend_utils.py", stub):
        shutil.copy2(path, target / path.name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the Triton serving environment (.venv-serve).")
    parser.add_argument("venv", nargs="?", help=f"where (default: ${VENV_VARIABLE} or {DEFAULT_VENV})")
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if a complete one exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    env = build_serve_environment(args.venv, rebuild=args.rebuild)
    print(f"serving environment ready: {env.venv} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
