"""One small storage interface over local disk and S3.

Flows and tasks address data by URI (a plain path, ``file://`` or ``s3://``) so the same pipeline
runs on a laptop and against an object store. Writes are atomic on both backends: a reader sees the
old object or the new one, never a torn file, which is what lets a crashed run be resumed safely.

S3 calls are retried here, not inside boto3: one retry loop (exponential backoff with full jitter)
covers the request *and* the streaming of the body, so a connection cut half-way through a GET is
re-requested instead of surfacing as a failure, and attempts never multiply across two layers.
"""
from __future__ import annotations

import abc
import errno
import functools
import io
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

T = TypeVar("T")

MiB = 1024 * 1024
_TMP_SUFFIX = ".plmops-tmp"  # in-flight local writes; never listed
_GLOB_CHARS = re.compile(r"[*?\[]")
_MAX_DELAY_S = 20.0
_TRANSIENT_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "Throttling", "ThrottlingException",
    "RequestTimeout", "RequestTimeoutException", "ConditionalRequestConflict",
})


def open_storage(
    uri: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    max_attempts: int = 5,
) -> Storage:
    """Open the storage rooted at ``uri``: a local path, ``file://`` URI or ``s3://bucket[/prefix]``.

    Endpoint and region fall back to the standard AWS variables so that code run inside a test
    server's or a cluster's environment needs no extra configuration; credentials always come from
    the standard AWS chain and are never held in our objects.
    """
    scheme, sep, _ = uri.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme == "s3":
        return S3Storage(uri, endpoint_url=endpoint_url, region=region, max_attempts=max_attempts)
    if scheme in ("", "file"):
        return LocalStorage(uri)
    raise ValueError(f"unsupported storage URI scheme {scheme!r} in {uri!r}; "
                     "expected a local path, file:// or s3://")


def _local_path(uri: str) -> str:
    return unquote(urlsplit(uri).path) if uri.startswith("file://") else uri


def _check_key(key: str, root: str, *, prefix: bool = False) -> str:
    """Keys are relative POSIX paths; anything that could escape the root is refused."""
    parts = key.split("/")
    body = parts[:-1] if prefix else parts  # a prefix may end with "/" or a partial name
    bad_part = any(p in ("", ".", "..") for p in body)
    if (not prefix and not key) or key.startswith("/") or "\\" in key or bad_part:
        raise ValueError(f"invalid {'prefix' if prefix else 'key'} {key!r} for storage {root}: "
                         "expected a relative path like 'dir/name' without '.', '..' or empty parts")
    return key


class Storage(abc.ABC):
    """Objects addressed by keys relative to a root URI."""

    root: str

    @abc.abstractmethod
    def uri_for(self, key: str) -> str:
        """Full address of ``key``: a path for local storage, an ``s3://`` URI for S3."""

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Replace the object atomically: readers see the old content or the new, never a mix."""

    @abc.abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create the object only if no object exists at ``key``; True if this call created it.

        On S3, if a PUT succeeds but its response is lost, the retry is refused and this returns
        False although our data was stored: use content the caller can recognise (e.g. a run id).
        """

    @abc.abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A streaming reader, for objects too large to hold in memory."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def size(self, key: str) -> int: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys starting with ``prefix`` (a string prefix, as on S3, not only a directory)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error (as on S3)."""

    @abc.abstractmethod
    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str]:
        """The pyarrow filesystem and base path of this root, for ``pyarrow.dataset``."""

    def delete_prefix(self, prefix: str) -> None:
        for key in self.list(prefix):
            self.delete(key)

    def read_json(self, key: str) -> Any:
        try:
            return json.loads(self.read_bytes(key))
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.uri_for(key)}: invalid JSON: {err}") from err

    def write_json(self, key: str, obj: Any) -> None:
        """Sorted keys and stable indentation so that equal objects give byte-equal files."""
        text = json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=2) + "\n"
        self.write_bytes(key, text.encode("utf-8"))

    def write_parquet(self, key: str, table: pa.Table, compression: str = "zstd") -> bytes:
        """Serialised in memory first so the object appears whole (S3 has no atomic rename).

        Returns the bytes written, so a caller can checksum them without reading the object back.
        """
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression=compression)
        data = sink.getvalue().to_pybytes()
        self.write_bytes(key, data)
        return data

    def put_folder(self, prefix: str, folder: str | Path, marker: str | None = None) -> list[str]:
        """Upload every file under a local folder to `prefix/`; `marker` (a file name in it) goes last,
        so a reader that waits for the marker never sees a half-copied folder. Returns the keys written."""
        root = Path(folder)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.relative_to(root).as_posix() == marker)  # stable: the marker last
        keys = []
        for path in files:
            key = f"{prefix.rstrip('/')}/{path.relative_to(root).as_posix()}"
            self.write_bytes(key, path.read_bytes())
            keys.append(key)
        return keys

    def get_folder(self, prefix: str, folder: str | Path) -> Path:
        """Download every key under `prefix/` into a local folder (created); the folder's path."""
        root, prefix = Path(folder), prefix.rstrip("/") + "/"
        keys = self.list(prefix)
        if not keys:
            raise FileNotFoundError(f"{self.uri_for(prefix)}: nothing stored under this prefix")
        for key in keys:
            target = root / key[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read_bytes(key))
        return root

    def read_parquet(self, key: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole object is fetched in one retried GET; only `columns` are decoded."""
        return pq.read_table(pa.py_buffer(self.read_bytes(key)), columns=list(columns) if columns else None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r})"


# --------------------------------------------------------------------------- local disk


def _fsync_dir(path: Path) -> None:
    """Make a rename or link in ``path`` durable (POSIX needs the directory itself synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage(Storage):
    def __init__(self, uri: str) -> None:
        self._dir = Path(_local_path(uri) or ".").expanduser()
        self.root = str(self._dir)

    def _path(self, key: str) -> Path:
        return self._dir / _check_key(key, self.root)

    def uri_for(self, key: str) -> str:
        return str(self._path(key))

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def open_read(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def _write_temp(self, path: Path, data: bytes) -> str:
        """A fully written, synced sibling of ``path`` that a rename or link can publish."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{_TMP_SUFFIX}"))
        # Not mkstemp: its 0600 mode would survive the rename; 0666 lets the umask decide, as for open().
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        _fsync_dir(path.parent)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        # link() refuses an existing target and publishes a complete file in one step.
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        _fsync_dir(path.parent)
        return True

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def list(self, prefix: str = "") -> list[str]:
        _check_key(prefix, self.root, prefix=True)
        keys = []
        for dirpath, _, filenames in os.walk(self._dir / prefix.rpartition("/")[0]):
            rel = Path(dirpath).relative_to(self._dir).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix) and not name.endswith(_TMP_SUFFIX):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Delete the keys, then the folders they leave empty: on disk as on S3, nothing stays behind."""
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        folders = {self._path(k).parent for k in keys}
        for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
            while folder != self._dir and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent

    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), os.path.abspath(self._dir)


# --------------------------------------------------------------------------- S3

_CLIENT_LOCK = threading.Lock()  # boto3's default session is not thread-safe


def _status_and_code(err: Exception) -> tuple[int, str]:
    response = getattr(err, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status, str(response.get("Error", {}).get("Code", ""))


def _is_transient(err: Exception) -> bool:
    from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError, IncompleteReadError

    if isinstance(err, ClientError):
        status, code = _status_and_code(err)
        return status >= 500 or status == 429 or code in _TRANSIENT_CODES
    return isinstance(err, (HTTPClientError, BotoConnectionError, IncompleteReadError,
                            ConnectionError, TimeoutError))


def _as_os_error(err: Exception, what: str, uri: str, attempts: int) -> OSError:
    """Callers handle missing and forbidden objects like local files, whatever the backend."""
    status, code = _status_and_code(err)
    if status == 404 or code in ("NoSuchKey", "NoSuchBucket"):
        return FileNotFoundError(errno.ENOENT, f"not found on S3 ({code or status})", uri)
    if status == 403 or code == "AccessDenied":
        return PermissionError(errno.EACCES, f"access denied by S3 ({code or status})", uri)
    if status == 412:  # only a resumed read sends a precondition (IfMatch) that can fail
        return OSError(f"{uri} was replaced on S3 while being read ({code}); read it again")
    return OSError(f"S3 {what} of {uri} failed after {attempts} attempt(s): {err}")


class S3Storage(Storage):
    """``s3://bucket[/prefix]``; works with AWS and S3-compatible servers (path-style addressing)."""

    def __init__(
        self,
        uri: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        max_attempts: int = 5,
        multipart_threshold: int = 64 * MiB,
        retry_base_delay: float = 0.25,
    ) -> None:
        # Split by hand: keys may hold "#" or "?", which a URL parser would cut off.
        self.bucket, _, prefix = uri[len("s3://"):].partition("/")
        if not uri.startswith("s3://") or not self.bucket:
            raise ValueError(f"invalid S3 URI {uri!r}: expected s3://bucket[/prefix]")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts} (for {uri})")
        prefix = prefix.strip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        self.root = f"s3://{self.bucket}/{prefix}".rstrip("/")
        env = os.environ.get
        self.endpoint_url = endpoint_url or env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL")
        self.region = region or env("AWS_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1"
        self.max_attempts = max_attempts
        self.multipart_threshold = multipart_threshold
        self.retry_base_delay = retry_base_delay
        self._client: Any = None

    def __repr__(self) -> str:
        return f"S3Storage({self.root!r}, endpoint_url={self.endpoint_url!r}, region={self.region!r})"

    def __getstate__(self) -> dict[str, Any]:
        # boto3 clients neither pickle nor survive a fork: each process builds its own.
        return {**self.__dict__, "_client": None}

    @property
    def _s3(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"mode": "standard", "total_max_attempts": 1},  # we retry, see module doc
                connect_timeout=10,
                read_timeout=60,
                s3={"addressing_style": "path"} if self.endpoint_url else None,
            )
            with _CLIENT_LOCK:
                self._client = boto3.client(
                    "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config)
        return self._client

    def _retry(self, what: str, uri: str, call: Callable[[], T]) -> T:
        """Run ``call`` until it succeeds, backing off on transient S3 errors."""
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(1, self.max_attempts + 1):
            try:
                return call()
            except (BotoCoreError, ClientError, ConnectionError, TimeoutError) as err:
                transient = _is_transient(err)
                if transient and attempt < self.max_attempts:
                    delay = random.uniform(0, min(_MAX_DELAY_S, self.retry_base_delay * 2 ** (attempt - 1)))
                    logger.warning("S3 %s of %s failed (attempt %d/%d: %s); retrying in %.2fs",
                                   what, uri, attempt, self.max_attempts, err, delay)
                    time.sleep(delay)
                    continue
                if transient or isinstance(err, ClientError):
                    raise _as_os_error(err, what, uri, attempt) from err
                raise  # a bug on our side (e.g. a bad parameter), not an S3 failure
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _key(self, key: str) -> str:
        return self._prefix + _check_key(key, self.root)

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def read_bytes(self, key: str) -> bytes:
        # The whole GET is the retried unit: a body cut mid-stream is fetched again.
        return self._retry("read", self.uri_for(key), lambda: self._s3.get_object(
            Bucket=self.bucket, Key=self._key(key))["Body"].read())

    def open_read(self, key: str) -> BinaryIO:
        return io.BufferedReader(_S3Reader(self, key), buffer_size=MiB)  # type: ignore[return-value]

    def write_bytes(self, key: str, data: bytes) -> None:
        # A single PUT, or a completed multipart upload, replaces the object atomically.
        if len(data) <= self.multipart_threshold:
            self._retry("write", self.uri_for(key), lambda: self._s3.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data))
            return
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=self.multipart_threshold,
                                multipart_chunksize=self.multipart_threshold)
        self._retry("multipart write", self.uri_for(key), lambda: self._s3.upload_fileobj(
            io.BytesIO(data), self.bucket, self._key(key), Config=config))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        def put() -> bool:
            try:
                self._s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            except ClientError as err:
                if _status_and_code(err)[0] == 412:
                    return False
                raise
            return True

        return self._retry("conditional write", self.uri_for(key), put)

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        return self._retry("head", self.uri_for(key), lambda: self._s3.head_object(
            Bucket=self.bucket, Key=self._key(key))["ContentLength"])

    def list(self, prefix: str = "") -> list[str]:
        full = self._prefix + _check_key(prefix, self.root, prefix=True)

        def listing() -> list[str]:
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            keys = (obj["Key"] for page in pages for obj in page.get("Contents", ()))
            # Keys ending in "/" are directory markers (pyarrow writes them), not objects.
            return sorted(k[len(self._prefix):] for k in keys if not k.endswith("/"))

        return self._retry("list", f"s3://{self.bucket}/{full}", listing)

    def delete(self, key: str) -> None:
        self._retry("delete", self.uri_for(key), lambda: self._s3.delete_object(
            Bucket=self.bucket, Key=self._key(key)))

    def delete_prefix(self, prefix: str) -> None:
        keys = [self._prefix + k for k in self.list(prefix)]
        where = f"s3://{self.bucket}/{self._prefix}{prefix}"
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = {"Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True}
            call = functools.partial(self._s3.delete_objects, Bucket=self.bucket, Delete=batch)
            errors = self._retry("delete", where, call).get("Errors")
            if errors:
                raise OSError(f"S3 refused to delete {len(errors)} object(s) under {where}, e.g. "
                              f"{errors[0]['Key']}: {errors[0].get('Code')} {errors[0].get('Message')}")

    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str]:
        # pyarrow's C++ client ignores AWS_ENDPOINT_URL: pass the endpoint explicitly.
        kwargs: dict[str, Any] = {}
        if self.endpoint_url:
            endpoint = urlsplit(self.endpoint_url)
            kwargs.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme or "https")
        fs = pafs.S3FileSystem(region=self.region,
                               retry_strategy=pafs.AwsStandardS3RetryStrategy(self.max_attempts), **kwargs)
        return fs, f"{self.bucket}/{self._prefix}".rstrip("/")


class _S3Reader(io.RawIOBase):
    """An S3 object as a file that resumes, with a ranged GET, where a dropped stream stopped.

    ``IfMatch`` on the ETag makes a resumed read fail rather than splice two versions together.
    """

    def __init__(self, storage: S3Storage, key: str) -> None:
        super().__init__()
        self._storage, self._key = storage, storage._key(key)
        self._uri = storage.uri_for(key)
        self._pos = 0
        self._body: Any = None
        self._etag = ""
        self._size = storage._retry("read", self._uri, self._open)

    def _open(self) -> int:
        ranged = {"Range": f"bytes={self._pos}-", "IfMatch": self._etag} if self._pos else {}
        response = self._storage._s3.get_object(Bucket=self._storage.bucket, Key=self._key, **ranged)
        self._body, self._etag = response["Body"], response["ETag"]
        return self._pos + response["ContentLength"]

    def _read(self, size: int | None) -> bytes:
        def attempt() -> bytes:
            if self._pos >= self._size:
                return b""
            if self._body is None:
                self._open()
            try:
                return self._body.read(size)
            except BaseException:
                self._body.close()
                self._body = None
                raise

        data = self._storage._retry("read", self._uri, attempt)
        self._pos += len(data)
        return data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self._read(None)

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None
        super().close()


# --------------------------------------------------------------------------- source URIs


def _split_uri(uri: str) -> tuple[str, str]:
    """(storage root URI, last path component); the component is "" for a bucket or a trailing "/"."""
    uri = _local_path(uri)
    if uri.endswith("/") or (uri.startswith("s3://") and "/" not in uri[len("s3://"):]):
        return uri, ""
    root, sep, name = uri.rpartition("/")
    return root or sep, name


def _storage_and_key(uri: str, storage_kwargs: dict[str, Any]) -> tuple[Storage, str]:
    root, name = _split_uri(uri)
    if not name:
        raise IsADirectoryError(errno.EISDIR, "expected a file, got a bucket or directory", uri)
    return open_storage(root, **storage_kwargs), name


def open_uri(uri: str, **storage_kwargs: Any) -> BinaryIO:
    storage, name = _storage_and_key(uri, storage_kwargs)
    return storage.open_read(name)


def read_uri_bytes(uri: str, **storage_kwargs: Any) -> bytes:
    storage, name = _storage_and_key(uri, storage_kwargs)
    return storage.read_bytes(name)


def uri_size(uri: str, **storage_kwargs: Any) -> int:
    storage, name = _storage_and_key(uri, storage_kwargs)
    return storage.size(name)


def _segment_regex(segment: str) -> str:
    """One path segment of a glob; like ``glob``, a wildcard never matches a leading dot."""
    out = [r"(?!\.)"] if segment[:1] in ("*", "?", "[") and segment else []
    i = 0
    while i < len(segment):
        char = segment[i]
        close = segment.find("]", i + 2) if char == "[" else -1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif close != -1:
            body = segment[i + 1:close].replace("\\", "\\\\")
            out.append(f"[^/{body[1:]}]" if body.startswith("!") else f"[{body}]")
            i = close
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Glob semantics of ``glob.glob(recursive=True)`` for keys: ``**`` spans directories."""
    segments = pattern.split("/")
    out = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            out.append(r"[^/.][^/]*(?:/[^/.][^/]*)*" if last else r"(?:[^/.][^/]*/)*")
        else:
            out.append(_segment_regex(segment) + ("" if last else "/"))
    return re.compile("".join(out))


def _is_hidden(parts: Sequence[str]) -> bool:
    return any(part.startswith(".") for part in parts)


def _expand_glob(pattern: str, start: int, storage_kwargs: dict[str, Any]) -> list[str]:
    cut = pattern.rfind("/", 0, start) + 1
    base, glob = pattern[:cut], pattern[cut:]
    if base.startswith("s3://") and base.count("/") < 3:
        raise ValueError(f"wildcards in an S3 bucket name are not supported: {pattern!r}")
    storage = open_storage(base, **storage_kwargs)
    regex = _glob_regex(glob)
    literal = glob[: _GLOB_CHARS.search(glob).start()]  # type: ignore[union-attr]
    try:
        keys = storage.list(literal)
    except FileNotFoundError:  # a missing bucket matches nothing, like a missing directory
        return []
    matches = []
    for key in keys:
        parts = key.split("/")
        # A match on a directory brings in the files below it, as a directory source does.
        if any(regex.fullmatch("/".join(parts[:i])) and not _is_hidden(parts[i:])
               for i in range(1, len(parts) + 1)):
            matches.append(storage.uri_for(key))
    return matches


def _expand_path(path: str, storage_kwargs: dict[str, Any]) -> list[str]:
    root, name = _split_uri(path)
    if name:
        parent = open_storage(root, **storage_kwargs)
        if parent.exists(name):
            return [parent.uri_for(name)]
    storage = open_storage(path, **storage_kwargs)
    try:
        keys = storage.list()
    except FileNotFoundError:
        return []
    return [storage.uri_for(k) for k in keys if not _is_hidden(k.split("/"))]


def expand_sources(patterns: Sequence[str], **storage_kwargs: Any) -> list[str]:
    """Turn user-given sources (files, directories, globs; local or S3) into a list of files.

    Each pattern's files come sorted, patterns keep their order, duplicates are dropped. Local
    results are plain paths. A source that yields no file is an error, not an empty corpus.
    """
    if isinstance(patterns, str):
        raise TypeError(f"expand_sources takes a sequence of patterns, got the string {patterns!r}")
    seen: dict[str, None] = {}
    for pattern in patterns:
        wildcard = _GLOB_CHARS.search(pattern)
        found = (_expand_glob(pattern, wildcard.start(), storage_kwargs) if wildcard
                 else _expand_path(pattern, storage_kwargs))
        if not found:
            raise FileNotFoundError(errno.ENOENT, "source matches no file", pattern)
        seen.update(dict.fromkeys(found))
    return list(seen)
