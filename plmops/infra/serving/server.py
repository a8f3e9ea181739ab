"""Run the Triton server of the serving environment on loopback ports, and stop it cleanly.

The bundled `tritonserver` needs three things a plain launch gets wrong (see docs/serving.md):
LD_LIBRARY_PATH must list the serving Python's own libpython before the system's (the Python stub
links `libpython3.X.so.1.0` by name) and the wheel's bundled libraries; PATH must start with the
serving environment's bin/, which is how the stub's embedded interpreter finds that environment's
site-packages (numpy < 2); and the backends folder must be laid out as Triton expects, which
`environment.build_serve_environment` did. Python models additionally read PLMOPS_SERVE_SITE_PACKAGES.

Stopping sends SIGTERM (Triton unloads models and exits, ≈ 2-4 s with `exit_timeout_s` = 5), then
kills the whole process group (server and Python stubs) if it has not exited in time, and removes the
shared-memory regions of the Python backend that it left behind.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from plmops.infra.serving.environment import ServeEnvironment

ControlMode = Literal["none", "poll", "explicit"]
SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"
_PROBLEM = re.compile(r"^E\d{4}|ERROR|[Ff]ailed|^error:")
_GPU_NOISE = re.compile(r"CudaDriverHelper|NVML|DCGM|pinned memory|CUDA driver")


class ServerError(RuntimeError):
    """The server did not start, exited, or a model did not load; the message ends with its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def triton_repository_path(uri: str | Path, endpoint_url: str | None = None) -> str:
    """What `--model-repository` takes: a local path as is, and for `s3://bucket/prefix` with a custom
    endpoint (MinIO, moto) Triton's `s3://http://host:port/bucket/prefix` form."""
    text = str(uri)
    if not text.startswith("s3://"):
        return str(Path(text.removeprefix("file://")).resolve())
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return text
    parts = urlsplit(endpoint)
    return f"s3://{parts.scheme}://{parts.netloc}/{text[len('s3://'):].strip('/')}"


class TritonServer:
    """One `tritonserver` process on `host` (loopback by default), ports chosen free unless given.

    `model_control="explicit"` starts with only `load_models` loaded and lets clients load and unload
    models through the repository API (tritonclient's `load_model` / `unload_model`); "poll" rescans the
    repository every `poll_seconds`; "none" loads everything once.
    """

    def __init__(
        self,
        repository: str | Path,
        *,
        environment: ServeEnvironment | None = None,
        model_control: ControlMode = "none",
        load_models: Sequence[str] = (),
        poll_seconds: int = 5,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        exit_timeout_s: int = 5,
        log_file: str | Path | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        if model_control not in ("none", "poll", "explicit"):
            raise ValueError(f"model_control must be none, poll or explicit, got {model_control!r}")
        if load_models and model_control != "explicit":
            raise ValueError("load_models applies to model_control='explicit' only (otherwise all models load)")
        self.environment = environment or ServeEnvironment.open()
        self.repository = triton_repository_path(repository)
        self.model_control, self.load_models, self.poll_seconds = model_control, tuple(load_models), poll_seconds
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.exit_timeout_s = exit_timeout_s
        self.log_file = Path(log_file) if log_file else _temporary_log()
        self._remove_log = log_file is None  # a temporary log goes with a clean stop, stays after a failure
        self.extra_env = dict(extra_env or {})
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._shm_before: set[str] = set()

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        env = self.environment
        args = [
            str(env.tritonserver),
            f"--model-repository={self.repository}",
            f"--backend-directory={env.backend_directory}",
            f"--model-control-mode={self.model_control}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--exit-timeout-secs={self.exit_timeout_s}",
        ]
        if self.model_control == "poll":
            args.append(f"--repository-poll-secs={self.poll_seconds}")
        args += [f"--load-model={name}" for name in self.load_models]
        return args

    def process_env(self) -> dict[str, str]:
        env, paths = dict(os.environ), self.environment
        env.pop("PYTHONHOME", None)
        previous = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*map(str, paths.library_path), *([previous] if previous else [])])
        env["PATH"] = os.pathsep.join([str(paths.bin), env.get("PATH", "")])
        env["PLMOPS_SERVE_SITE_PACKAGES"] = str(paths.site_packages)
        return env | self.extra_env

    def start(self, timeout_s: float = 60.0) -> TritonServer:
        """Start and wait until the server (and every model it loads) is ready, or raise ServerError."""
        if self._process is not None:
            raise ServerError("this server is already started")
        self._shm_before = _shm_regions()
        started = time.monotonic()
        with open(self.log_file, "wb") as log:
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.process_env(),
                start_new_session=True,  # its own process group: the Python stubs can be killed with it
            )
        try:
            self._wait_ready(started + timeout_s)
        except BaseException:
            self._remove_log = False  # the error message points at it
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self._process is not None
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise ServerError(f"tritonserver exited with code {code} while starting{self._log_summary()}")
            if self._http_ok("/v2/health/ready"):
                return
            time.sleep(0.1)
        raise ServerError(f"tritonserver was not ready within the timeout{self._log_summary()}")

    def _http_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def is_ready(self, model: str | None = None) -> bool:
        return self._http_ok(f"/v2/models/{model}/ready" if model else "/v2/health/ready")

    def log_lines(self) -> list[str]:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def log_tail(self, lines: int = 15) -> str:
        """The last lines, without the status tables Triton prints at start and exit."""
        kept = [line for line in self.log_lines() if not line.startswith(("|", "+")) and not line.endswith("] ")]
        return "\n".join(kept[-lines:])

    def log_problems(self) -> str:
        """Error lines of the log, less the noise every start on a machine without a GPU prints."""
        return "\n".join(
            line for line in self.log_lines() if _PROBLEM.search(line) and not _GPU_NOISE.search(line)
        )

    def _log_summary(self) -> str:
        problems = self.log_problems()
        summary = f"; problems in its log ({self.log_file}):\n{problems}" if problems else f" (log: {self.log_file})"
        return f"{summary}\nlog tail:\n{self.log_tail()}"

    def stop(self, timeout_s: float | None = None) -> float:
        """Stop gracefully, then by force after `timeout_s` (default: Triton's exit timeout + 5 s).
        Returns the seconds it took; stopping a stopped server does nothing."""
        process, self._process = self._process, None
        if process is None:
            return 0.0
        started = time.monotonic()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s if timeout_s is not None else self.exit_timeout_s + 5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        _kill_group_leftovers(process.pid)
        _remove_stale_shm(_shm_regions() - self._shm_before)
        if self._remove_log:
            self.log_file.unlink(missing_ok=True)
        return time.monotonic() - started

    def wait(self) -> int:
        """Block until the server exits and return its exit code; with `with server:` around it, Ctrl-C
        stops it cleanly (what `plmops serve` needs)."""
        if self._process is None:
            raise ServerError("the server is not started")
        return self._process.wait()

    def __enter__(self) -> TritonServer:
        return self if self._process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _temporary_log() -> Path:
    descriptor, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
    os.close(descriptor)
    return Path(name)


def _kill_group_leftovers(pgid: int) -> None:
    """Python stubs still in the server's process group after it exited are ended with it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _shm_regions() -> set[str]:
    try:
        return {p.name for p in SHM_DIR.iterdir() if p.name.startswith(SHM_PREFIX)}
    except FileNotFoundError:
        return set()


def _mapped_anywhere(names: set[str]) -> set[str]:
    """Which of the shm files some live process still maps (another server's, say)."""
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:
            continue
        mapped |= {name for name in names if name in text}
    return mapped


def _remove_stale_shm(names: set[str]) -> None:
    for name in names - _mapped_anywhere(names):
        (SHM_DIR / name).unlink(missing_ok=True)
