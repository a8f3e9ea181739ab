"""A real S3 endpoint for tests: moto's server on loopback, behind a fault-injecting middleware.

Everything goes over HTTP, so boto3 and pyarrow's C++ client are exercised exactly as they are against
AWS. The middleware lets a test make the next requests fail (HTTP errors with S3's XML body), drop
their connection, or cut a response body short, to prove that callers retry what is transient.
"""
from __future__ import annotations

import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

_ERROR_CODES = {500: "InternalError", 503: "SlowDown", 403: "AccessDenied", 404: "NoSuchKey"}


@dataclass
class _Fault:
    kind: str  # "status" | "reset" | "truncate"
    method: str | None  # applies to requests of this HTTP method only; None: any
    status: int = 500
    code: str = "InternalError"
    keep_bytes: int = 0


def _drop_connection(environ: dict[str, Any], *, reset: bool) -> None:
    """End the client's connection now: with an RST (unread data is lost) or a plain FIN."""
    sock: socket.socket = environ["werkzeug.socket"]
    if reset:  # linger 0: closing sends an RST instead of a FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.shutdown(socket.SHUT_RDWR)


class FaultInjector:
    """WSGI middleware that counts requests and applies queued faults in order."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests = 0
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: _Fault, n: int) -> None:
        with self._lock:
            self._faults.extend([fault] * n)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take(self, method: str) -> _Fault | None:
        with self._lock:
            self.requests += 1
            for i, fault in enumerate(self._faults):
                if fault.method in (None, method):
                    return self._faults.pop(i)
        return None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        method = environ["REQUEST_METHOD"]
        fault = self._take(method)
        if fault is None:
            return self.app(environ, start_response)
        if fault.kind == "reset":
            _drop_connection(environ, reset=True)
            start_response("500 Connection Dropped", [])
            return []
        if fault.kind == "status":
            from werkzeug.wsgi import get_input_stream

            get_input_stream(environ).read()  # the client must get to read our answer
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{fault.code}</Code>'
                    f"<Message>injected fault</Message><RequestId>{uuid.uuid4().hex}</RequestId>"
                    "</Error>").encode()
            body = b"" if method == "HEAD" else body
            start_response(f"{fault.status} Injected", [("Content-Type", "application/xml"),
                                                        ("Content-Length", str(len(body)))])
            return [body]
        return self._truncated(environ, start_response, fault.keep_bytes)

    def _truncated(self, environ: dict[str, Any], start_response: Any, keep: int) -> Iterator[bytes]:
        """The real response's headers (full Content-Length) but only ``keep`` bytes of its body."""
        captured: list[Any] = []
        body = b"".join(self.app(environ, lambda status, headers, exc_info=None: captured.extend(
            [status, headers])))
        start_response(*captured)
        yield body[:keep]
        _drop_connection(environ, reset=False)  # a FIN, so the client gets the bytes sent


class S3TestServer:
    """moto's S3 (and other services) on ``127.0.0.1`` and a free port."""

    def __init__(self) -> None:
        # Imported here: moto takes ~1 s to import, which runs that don't use S3 should not pay.
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication, MotoRequestHandler, create_backend_app)
        from werkzeug.serving import make_server

        class QuietHandler(MotoRequestHandler):
            def log_request(self, *args: Any) -> None:
                """Keep one access-log line per request out of the test output."""

        self._injector = FaultInjector(DomainDispatcherApplication(create_backend_app))
        self._server = make_server("127.0.0.1", 0, self._injector, threaded=True,
                                   request_handler=QuietHandler)
        self.endpoint_url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._client: Any = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()

    @property
    def requests(self) -> int:
        """Requests received so far (faulted ones included); compare before and after a call."""
        return self._injector.requests

    def fail_next(self, n: int, status: int = 500, *, code: str | None = None,
                  method: str | None = None) -> None:
        """Answer the next ``n`` requests (of ``method``, if given) with an S3 XML error."""
        code = code or _ERROR_CODES.get(status, "InternalError")
        self._injector.add(_Fault("status", method, status, code), n)

    def reset_next(self, n: int, *, method: str | None = None) -> None:
        """Drop the connection of the next ``n`` requests without answering."""
        self._injector.add(_Fault("reset", method), n)

    def truncate_next(self, n: int, keep_bytes: int, *, method: str = "GET") -> None:
        """Send the next ``n`` responses' headers but cut their body after ``keep_bytes``."""
        self._injector.add(_Fault("truncate", method, keep_bytes=keep_bytes), n)

    def clear_faults(self) -> None:
        self._injector.clear()

    def create_bucket(self, name: str) -> None:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")
        self._client.create_bucket(Bucket=name)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3TestServer]:
    """The S3 server, with the standard AWS variables pointing at it for the whole session.

    Fake credentials and empty config files keep a developer's real AWS setup out of the tests.
    """
    server = S3TestServer()
    server.start()
    no_config = str(tmp_path_factory.mktemp("aws") / "absent")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing-key-id",
            "AWS_SECRET_ACCESS_KEY": "testing-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": server.endpoint_url,
            "AWS_CONFIG_FILE": no_config,
            "AWS_SHARED_CREDENTIALS_FILE": no_config,
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            mp.setenv(name, value)
        yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3TestServer) -> Iterator[str]:
    """A fresh, empty bucket per test; faults a test left queued are cleared afterwards."""
    name = f"plmops-test-{uuid.uuid4().hex[:16]}"
    s3_server.create_bucket(name)
    yield f"s3://{name}"
    s3_server.clear_faults()
