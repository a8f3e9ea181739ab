"""One set of storage tests, run against local disk and against a real S3 server (moto over HTTP)."""
from __future__ import annotations

import glob
import os
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from plmops.infra.storage import (
    MiB,
    LocalStorage,
    S3Storage,
    Storage,
    expand_sources,
    open_storage,
    open_uri,
    read_uri_bytes,
    uri_size,
)


@pytest.fixture(params=["local", "s3"])
def root_uri(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/store"


@pytest.fixture
def storage(root_uri: str) -> Storage:
    return open_storage(root_uri)


def test_open_storage_picks_the_backend_from_the_uri(tmp_path) -> None:
    assert isinstance(open_storage(str(tmp_path)), LocalStorage)
    assert open_storage(f"file://{tmp_path}").uri_for("a/b") == str(tmp_path / "a" / "b")
    s3 = open_storage("s3://bucket/some/prefix/", endpoint_url="http://127.0.0.1:1", region="eu-west-1")
    assert isinstance(s3, S3Storage)
    assert s3.uri_for("a/b") == "s3://bucket/some/prefix/a/b"
    assert open_storage("s3://bucket/odd#name?/").uri_for("k") == "s3://bucket/odd#name?/k"
    assert isinstance(open_storage("runs/epoch:1"), LocalStorage)
    with pytest.raises(ValueError, match="'gs'.*gs://bucket/x"):
        open_storage("gs://bucket/x")


def test_bytes_json_and_parquet_round_trip(storage: Storage) -> None:
    storage.write_bytes("raw/blob.bin", bytes(range(256)) * 3)
    assert storage.read_bytes("raw/blob.bin") == bytes(range(256)) * 3

    storage.write_json("meta/run.json", {"lang": "ug", "name": "维吾尔语 ئۇيغۇرچە", "a": [1, 2]})
    assert storage.read_json("meta/run.json") == {"lang": "ug", "name": "维吾尔语 ئۇيغۇرچە", "a": [1, 2]}
    text = storage.read_bytes("meta/run.json").decode("utf-8")
    assert text.startswith('{\n  "a": [\n') and "维吾尔语 ئۇيغۇرچە" in text  # sorted, indented, not escaped

    table = pa.table({"text": ["藏文 བོད་ཡིག", "蒙古文 ᠮᠣᠩᠭᠣᠯ", ""], "n": [1, 2, 3]})
    storage.write_parquet("shards/part-0.parquet", table)
    assert storage.read_parquet("shards/part-0.parquet").equals(table)
    meta = pq.ParquetFile(pa.BufferReader(storage.read_bytes("shards/part-0.parquet"))).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"

    uri = storage.uri_for("meta/run.json")
    assert uri.startswith("s3://") if isinstance(storage, S3Storage) else os.path.isfile(uri)


def test_invalid_json_names_the_object(storage: Storage) -> None:
    storage.write_bytes("bad.json", b"{not json")
    with pytest.raises(ValueError, match=f"{storage.uri_for('bad.json')}: invalid JSON"):
        storage.read_json("bad.json")


def test_exists_size_delete_and_missing_objects(storage: Storage, request: pytest.FixtureRequest) -> None:
    assert not storage.exists("a/b.txt")
    storage.write_bytes("a/b.txt", b"12345")
    assert storage.exists("a/b.txt") and storage.size("a/b.txt") == 5
    storage.delete("a/b.txt")
    assert not storage.exists("a/b.txt")
    storage.delete("a/b.txt")  # deleting what is gone is not an error, as on S3

    server = request.getfixturevalue("s3_server") if isinstance(storage, S3Storage) else None
    before = server.requests if server else 0
    with pytest.raises(FileNotFoundError) as info:
        storage.read_bytes("a/b.txt")
    assert storage.uri_for("a/b.txt") in str(info.value)
    if server:
        assert server.requests - before == 1  # a 404 is final: no retry
    with pytest.raises(FileNotFoundError, match="b.txt"):
        storage.open_read("a/b.txt")


@pytest.mark.parametrize("key", ["", "/abs", "../up", "a/../b", "a//b", "./a"])
def test_keys_that_could_escape_the_root_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError, match=f"invalid key {key!r}"):
        storage.write_bytes(key, b"x")


def test_list_is_a_sorted_string_prefix_match(storage: Storage) -> None:
    for key in ["b/c/4", "a/2", "ab/3", "a/1", "z"]:
        storage.write_bytes(key, key.encode())
    assert storage.list() == ["a/1", "a/2", "ab/3", "b/c/4", "z"]
    assert storage.list("a/") == ["a/1", "a/2"]
    assert storage.list("a") == ["a/1", "a/2", "ab/3"]
    assert storage.list("b/c/") == ["b/c/4"]
    assert storage.list("nothing/") == []
    storage.delete_prefix("a/")
    assert storage.list() == ["ab/3", "b/c/4", "z"]


def test_list_and_delete_prefix_page_past_1000_keys(s3_bucket: str) -> None:
    storage = open_storage(s3_bucket)
    keys = [f"many/{i:05d}" for i in range(1001)]
    for key in keys:  # serial is faster than threads here: client and server share one GIL
        storage.write_bytes(key, b"")
    storage.write_bytes("other", b"")
    assert storage.list("many/") == keys
    storage.delete_prefix("many/")
    assert storage.list() == ["other"]


def test_open_read_streams_in_chunks(storage: Storage) -> None:
    data = os.urandom(3 * MiB + 17)
    storage.write_bytes("big.bin", data)
    with storage.open_read("big.bin") as f:
        chunks = iter(lambda: f.read(MiB // 2), b"")
        assert b"".join(chunks) == data


def test_put_if_absent_creates_once(storage: Storage) -> None:
    assert storage.put_if_absent("locks/run-1", b"first") is True
    assert storage.put_if_absent("locks/run-1", b"second") is False
    assert storage.read_bytes("locks/run-1") == b"first"
    assert storage.list("locks/") == ["locks/run-1"]


def test_put_if_absent_has_one_winner_under_a_race(tmp_path) -> None:
    # Local only: moto checks If-None-Match and stores in two steps, so it cannot arbitrate a race.
    storage = open_storage(str(tmp_path))
    barrier = threading.Barrier(8)

    def claim(i: int) -> bool:
        barrier.wait()
        return storage.put_if_absent("lock", f"writer-{i}".encode())

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(claim, range(8)))
    assert won.count(True) == 1
    assert storage.read_bytes("lock") == f"writer-{won.index(True)}".encode()
    assert os.listdir(tmp_path) == ["lock"]


def test_a_reader_sees_the_old_or_the_new_content_never_a_mix(storage: Storage) -> None:
    versions = [bytes([i]) * (512 * 1024) for i in range(2)]
    storage.write_bytes("shared.bin", versions[0])
    done = threading.Event()

    def writer() -> None:
        for i in range(30):
            storage.write_bytes("shared.bin", versions[i % 2])
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set() or reads == 0:
        assert storage.read_bytes("shared.bin") in versions
        reads += 1
    thread.join()
    if isinstance(storage, LocalStorage):
        assert os.listdir(os.path.dirname(storage.uri_for("shared.bin"))) == ["shared.bin"]


def test_local_files_get_ordinary_permissions(tmp_path) -> None:
    storage = open_storage(str(tmp_path))
    storage.write_bytes("a", b"x")
    storage.put_if_absent("b", b"x")
    (tmp_path / "plain").write_bytes(b"x")
    modes = {os.stat(tmp_path / name).st_mode for name in ("a", "b", "plain")}
    assert len(modes) == 1


def test_a_failed_local_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch) -> None:
    storage = open_storage(str(tmp_path))
    storage.write_bytes("f.bin", b"old")

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        storage.write_bytes("f.bin", b"new")
    assert storage.read_bytes("f.bin") == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_storage_survives_pickling(storage: Storage) -> None:
    storage.write_bytes("k", b"v")
    clone = pickle.loads(pickle.dumps(storage))
    assert clone.read_bytes("k") == b"v" and repr(clone) == repr(storage)


def test_arrow_filesystem_serves_pyarrow_datasets(storage: Storage) -> None:
    table = pa.table({"lang": ["ug", "bo", "ug", "mn"], "text": ["a", "b", "c", "d"]})
    fs, base = storage.arrow_filesystem()
    ds.write_dataset(table, f"{base}/corpus", format="parquet", filesystem=fs,
                     partitioning=["lang"], partitioning_flavor="hive")
    back = ds.dataset(f"{base}/corpus", filesystem=fs, format="parquet", partitioning="hive").to_table()
    assert sorted(zip(back["lang"].to_pylist(), back["text"].to_pylist())) == sorted(
        zip(table["lang"].to_pylist(), table["text"].to_pylist()))
    listed = storage.list("corpus/")
    assert len(listed) == 3 and all(k.endswith(".parquet") for k in listed)

    storage.write_parquet("t.parquet", table)
    assert pq.read_table(f"{base}/t.parquet", filesystem=fs).equals(table)


# --------------------------------------------------------------------------- sources


@pytest.fixture
def sources(storage: Storage) -> Storage:
    for key in ["docs/a.txt", "docs/b.txt", "docs/c.json", "docs/sub/d.txt", "docs/.hidden/e.txt",
                "docs/.f.txt", "other/x.txt"]:
        storage.write_bytes(key, key.encode())
    return storage


@pytest.mark.parametrize(("patterns", "expected"), [
    (["docs/*.txt"], ["docs/a.txt", "docs/b.txt"]),
    (["docs/**/*.txt"], ["docs/a.txt", "docs/b.txt", "docs/sub/d.txt"]),
    (["docs/?.json"], ["docs/c.json"]),
    (["docs/[ab].txt"], ["docs/a.txt", "docs/b.txt"]),
    (["docs"], ["docs/a.txt", "docs/b.txt", "docs/c.json", "docs/sub/d.txt"]),
    (["docs/*"], ["docs/a.txt", "docs/b.txt", "docs/c.json", "docs/sub/d.txt"]),
    (["other/x.txt", "docs/*.txt", "docs/a.txt"], ["other/x.txt", "docs/a.txt", "docs/b.txt"]),
])
def test_expand_sources(sources: Storage, patterns: list[str], expected: list[str]) -> None:
    found = expand_sources([f"{sources.root}/{p}" for p in patterns])
    assert found == [sources.uri_for(k) for k in expected]


@pytest.mark.parametrize("pattern", ["docs/*.txt", "docs/**/*.txt", "docs/?.json", "**/*.txt", "docs/**"])
def test_local_globs_agree_with_the_glob_module(tmp_path, pattern: str) -> None:
    storage = open_storage(str(tmp_path))
    for key in ["docs/a.txt", "docs/c.json", "docs/sub/d.txt", "docs/.hidden/e.txt", "docs/.f.txt", "x.txt"]:
        storage.write_bytes(key, b"")
    expected = sorted(p for p in glob.glob(f"{tmp_path}/{pattern}", recursive=True) if os.path.isfile(p))
    assert expand_sources([f"{tmp_path}/{pattern}"]) == expected


@pytest.mark.parametrize("pattern", ["docs/*.csv", "nope.txt", "nodir", "nodir/*.txt"])
def test_a_source_matching_nothing_is_an_error_naming_it(sources: Storage, pattern: str) -> None:
    with pytest.raises(FileNotFoundError, match="matches no file") as info:
        expand_sources([f"{sources.root}/docs/a.txt", f"{sources.root}/{pattern}"])
    assert info.value.filename == f"{sources.root}/{pattern}"


def test_expand_sources_wants_a_list_not_a_string() -> None:
    with pytest.raises(TypeError, match="sequence of patterns"):
        expand_sources("docs/*.txt")


def test_s3_source_errors(s3_bucket: str) -> None:
    with pytest.raises(FileNotFoundError, match="s3://plmops-no-such-bucket/x"):
        expand_sources(["s3://plmops-no-such-bucket/x/*.txt"])
    with pytest.raises(ValueError, match="bucket name"):
        expand_sources(["s3://plmops-*/x.txt"])


def test_single_source_files(sources: Storage) -> None:
    uri = sources.uri_for("docs/sub/d.txt")
    assert read_uri_bytes(uri) == b"docs/sub/d.txt"
    assert uri_size(uri) == len(b"docs/sub/d.txt")
    with open_uri(uri) as f:
        assert f.read() == b"docs/sub/d.txt"
    with pytest.raises(FileNotFoundError, match="nope"):
        read_uri_bytes(sources.uri_for("docs/nope"))


# --------------------------------------------------------------------------- S3 failures


def fast_retrying(uri: str, max_attempts: int = 5) -> S3Storage:
    return S3Storage(uri, max_attempts=max_attempts, retry_base_delay=0.01)


def test_transient_failures_are_retried(s3_server, s3_bucket: str) -> None:
    storage = fast_retrying(s3_bucket)
    before = s3_server.requests
    s3_server.fail_next(3, status=500)
    storage.write_bytes("k", b"payload")
    assert s3_server.requests - before == 4

    before = s3_server.requests
    s3_server.fail_next(3, status=503)  # SlowDown
    assert storage.read_bytes("k") == b"payload"
    assert s3_server.requests - before == 4

    s3_server.reset_next(2)
    assert storage.list() == ["k"]
    s3_server.fail_next(1, status=500)
    assert storage.put_if_absent("k2", b"x") is True


def test_a_body_cut_mid_stream_is_fetched_again(s3_server, s3_bucket: str) -> None:
    storage = fast_retrying(s3_bucket)
    data = os.urandom(4 * MiB)
    storage.write_bytes("big", data)

    s3_server.truncate_next(1, keep_bytes=MiB)
    assert storage.read_bytes("big") == data

    before = s3_server.requests
    s3_server.truncate_next(1, keep_bytes=3 * MiB // 2)
    with storage.open_read("big") as f:
        assert b"".join(iter(lambda: f.read(MiB), b"")) == data
    assert s3_server.requests - before == 2  # the second GET resumes with a Range


def test_a_resumed_read_refuses_to_splice_two_versions(s3_server, s3_bucket: str) -> None:
    storage = fast_retrying(s3_bucket)
    storage.write_bytes("big", bytes(4 * MiB))
    s3_server.truncate_next(1, keep_bytes=MiB)
    with storage.open_read("big") as f:
        assert f.read(1000) == bytes(1000)
        storage.write_bytes("big", b"\xff" * (4 * MiB))
        with pytest.raises(OSError, match=f"{s3_bucket}/big was replaced on S3 while being read"):
            f.read()


def test_retries_stop_after_max_attempts(s3_server, s3_bucket: str) -> None:
    storage = fast_retrying(s3_bucket, max_attempts=2)
    before = s3_server.requests
    s3_server.fail_next(5)
    with pytest.raises(OSError, match=f"{s3_bucket}/k failed after 2 attempt"):
        storage.write_bytes("k", b"x")
    assert s3_server.requests - before == 2


def test_access_denied_is_a_permission_error_without_retry(s3_server, s3_bucket: str) -> None:
    storage = fast_retrying(s3_bucket)
    before = s3_server.requests
    s3_server.fail_next(1, status=403)
    with pytest.raises(PermissionError, match=f"{s3_bucket}/k"):
        storage.read_bytes("k")
    assert s3_server.requests - before == 1


def test_arrow_filesystem_retries_too(s3_server, s3_bucket: str) -> None:
    storage = open_storage(s3_bucket)
    table = pa.table({"x": list(range(10))})
    storage.write_parquet("t.parquet", table)
    fs, base = storage.arrow_filesystem()
    s3_server.fail_next(2, status=500)
    assert pq.read_table(f"{base}/t.parquet", filesystem=fs).equals(table)


def test_multipart_upload_for_large_objects(s3_server, s3_bucket: str) -> None:
    storage = S3Storage(s3_bucket, multipart_threshold=5 * MiB)
    data = os.urandom(11 * MiB)
    before = s3_server.requests
    storage.write_bytes("large.bin", data)
    assert s3_server.requests - before == 5  # create, 3 parts, complete
    assert storage.read_bytes("large.bin") == data


def test_endpoint_and_region_come_from_the_standard_variables(s3_server, s3_bucket, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    storage = open_storage(s3_bucket)
    assert (storage.endpoint_url, storage.region) == (s3_server.endpoint_url, "eu-west-3")
    storage.write_bytes("k", b"v")
    assert read_uri_bytes(f"{s3_bucket}/k") == b"v"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in repr(storage)

    unreachable = open_storage(s3_bucket, endpoint_url="http://127.0.0.1:9", max_attempts=2)
    with pytest.raises(OSError, match=f"{s3_bucket}/k failed after 2 attempt"):
        unreachable.read_bytes("k")

