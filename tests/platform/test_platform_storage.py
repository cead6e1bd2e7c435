"""Object store contract and the checkpoint store, on a local folder and on SeaweedFS S3."""

from __future__ import annotations

import os
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import urllib3
from minio.error import S3Error

from crossadapt.checkpoint import read_manifest
from crossadapt.models.spec import CategoricalField, FeatureSpec
from platform_stack import free_port, s3_store
from services.common.errors import DataLossError, InvalidArgumentError, NotFoundError, UnavailableError
from services.common.storage import CheckpointStore, LocalObjectStore, ObjectNotFoundError, ObjectStore
from services.common.storage.checkpoints import CheckpointNotFoundError
from services.common.storage.s3 import S3ObjectStore, with_retries

SPEC = FeatureSpec(categorical=(CategoricalField(name="user", vocab_size=10),))
FIELDS = {"architecture": "embedding-tables", "config": {}, "feature_spec": SPEC, "vocab_hash": "h" * 64}


def _folder(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / f"src-{len(list(tmp_path.iterdir()))}"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_object_store_contract(object_store: ObjectStore, tmp_path: Path) -> None:
    object_store.put_bytes("a/b/c.bin", b"one")
    object_store.put_bytes("a/d.bin", b"two")
    object_store.put_bytes("a/d.bin", b"three")  # overwrite is whole
    assert object_store.get_bytes("a/d.bin") == b"three" and object_store.size("a/b/c.bin") == 3
    assert object_store.list_children("a") == ["b", "d.bin"] and object_store.list_children("") == ["a"]
    assert object_store.list_keys("a") == ["a/b/c.bin", "a/d.bin"] and object_store.list_keys("zzz") == []
    source = tmp_path / "src.bin"
    source.write_bytes(os.urandom(1000))
    object_store.put_file("f/x.bin", source)
    object_store.get_file("f/x.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    object_store.delete("a/d.bin")
    object_store.delete("a/d.bin")  # deleting twice is fine
    assert not object_store.exists("a/d.bin")
    with pytest.raises(ObjectNotFoundError):
        object_store.get_bytes("a/d.bin")
    with pytest.raises(NotFoundError):
        object_store.size("nope")
    assert object_store.delete_prefix("a") == 1 and object_store.list_keys("a") == []


@pytest.mark.parametrize("key", ["", "../etc/passwd", "a//b", "a/./b", "a b", "/abs"])
def test_keys_that_could_escape_are_rejected(key: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError):
        LocalObjectStore(tmp_path).put_bytes(key, b"x")


def test_versions_latest_and_manifest_format(object_store: ObjectStore, tmp_path: Path) -> None:
    store = CheckpointStore(object_store)
    with pytest.raises(CheckpointNotFoundError):
        store.resolve("ctr/model")
    first = store.publish_folder("ctr/model", _folder(tmp_path, {"tables/a.bin": b"1" * 10, "b.bin": b"b"}), **FIELDS)
    second = store.publish_folder("ctr/model", _folder(tmp_path, {"b.bin": b"bb"}), **FIELDS)
    assert (first.version, second.version) == ("v000001", "v000002")
    assert store.versions("ctr/model") == ["v000001", "v000002"]
    assert store.resolve("ctr/model").version == "v000002" == store.resolve("ctr/model", "latest").version
    assert store.read_file(store.resolve("ctr/model", "v000001"), "tables/a.bin") == b"1" * 10
    with pytest.raises(CheckpointNotFoundError):
        store.resolve("ctr/model", "v000003")
    with pytest.raises(InvalidArgumentError):
        store.resolve("ctr/model", "3")
    fetched = store.fetch("ctr/model", "v000001", tmp_path / "fetched")
    core = read_manifest(tmp_path / "fetched")  # the core reader accepts the store's manifest
    assert core == fetched.manifest and set(core.files) == {"tables/a.bin", "b.bin"}
    assert core.files["b.bin"].size == 1


@pytest.mark.parametrize("name", ["", "a/v000001", "a//b", "../x", "a b"])
def test_bad_checkpoint_names(name: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError):
        CheckpointStore(LocalObjectStore(tmp_path)).versions(name)


def test_unpublished_version_is_invisible_until_its_manifest(object_store: ObjectStore, tmp_path: Path) -> None:
    store = CheckpointStore(object_store)
    store.publish_folder("m", _folder(tmp_path, {"x.bin": b"x"}), **FIELDS)
    version = store.claim_version("m", owner="op-1")
    assert version == "v000002" and store.claim_owner("m", version) == "op-1"
    entry = store.write_file("m", version, "x.bin", b"new")
    assert store.versions("m") == ["v000001"] and store.resolve("m").version == "v000001"
    manifest = store.resolve("m").manifest.model_copy(update={"files": {"x.bin": entry, "y.bin": entry}})
    with pytest.raises(DataLossError, match="y.bin"):  # a listed file that was never uploaded
        store.publish_manifest("m", version, manifest)
    assert store.versions("m") == ["v000001"]
    store.publish_manifest("m", version, manifest.model_copy(update={"files": {"x.bin": entry}}))
    assert store.resolve("m").version == version and store.read_file(store.resolve("m"), "x.bin") == b"new"
    assert store.claim_version("m", owner="op-2") == "v000003"  # numbers are never reused


def test_a_versions_files_go_up_side_by_side_and_a_failed_one_stops_the_publish(object_store: ObjectStore,
                                                                                 tmp_path: Path) -> None:
    """write_files uploads on several threads (what a co-distiller checkpoint waits on): every file and its
    manifest entry as write_file gives them, a local file as its bytes; one upload the store refuses raises,
    and that version stays unpublished."""
    from crossadapt.checkpoint import build_manifest

    store = CheckpointStore(object_store)
    files = {f"tables/f{i}/shard-00000.bin": os.urandom(1000 + i) for i in range(12)}
    (tmp_path / "model.bin").write_bytes(b"weights")
    version = store.claim_version("m", owner="op-1")
    entries = store.write_files("m", version, {**files, "model.bin": tmp_path / "model.bin"})
    assert list(entries) == [*files, "model.bin"]
    assert entries["model.bin"] == store.write_file("m", version, "model.bin", b"weights")
    published = store.publish_manifest("m", version, build_manifest({}, **FIELDS).model_copy(update={"files": entries}))
    assert all(store.read_file(published, name) == data for name, data in files.items())

    second = store.claim_version("m", owner="op-2")
    with pytest.raises(InvalidArgumentError, match="invalid object key"):  # the store refuses this one key
        store.write_files("m", second, {**files, "tables/f7/../escape.bin": b"x"})
    assert store.versions("m") == [version]


def test_in_parallel_runs_on_pool_threads_keeps_the_order_and_raises_the_first_failure() -> None:
    from services.common.storage.checkpoints import in_parallel

    threads: set[str] = set()

    def square(n: int) -> int:
        threads.add(threading.current_thread().name)
        time.sleep(0.01)  # long enough that one thread cannot take every item
        return n * n

    assert in_parallel(square, range(12)) == [n * n for n in range(12)]
    assert len(threads) > 1 and threading.current_thread().name not in threads  # side by side, on the pool
    assert in_parallel(square, [3]) == [9]  # one item: no pool

    def fail_on_five(n: int) -> int:
        if n == 5:
            raise UnavailableError("store down", field=str(n))
        return n

    with pytest.raises(UnavailableError, match="store down"):
        in_parallel(fail_on_five, range(12))


def test_reads_are_verified_against_the_manifest(object_store: ObjectStore, tmp_path: Path) -> None:
    store = CheckpointStore(object_store)
    published = store.publish_folder("m", _folder(tmp_path, {"t/x.bin": b"abcdef", "y.bin": b"y"}), **FIELDS)
    key = f"checkpoints/m/{published.version}/t/x.bin"
    object_store.put_bytes(key, b"abcdeF")  # same size, different bytes
    with pytest.raises(DataLossError, match="sha256") as caught:
        store.read_file(published, "t/x.bin")
    assert caught.value.field == "t/x.bin"
    with pytest.raises(DataLossError):
        store.fetch("m", None, tmp_path / "fetched")
    object_store.delete(key)
    with pytest.raises(DataLossError, match="missing"):
        store.read_file(published, "t/x.bin")
    with pytest.raises(NotFoundError):
        store.read_file(published, "not-listed.bin")


def test_concurrent_claims_get_distinct_versions(object_store: ObjectStore) -> None:
    store = CheckpointStore(object_store)
    claimed: list[str] = []
    barrier = threading.Barrier(6)

    def claim(index: int) -> None:
        barrier.wait()
        claimed.append(store.claim_version("race", owner=f"w{index}"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == 6 and len(set(claimed)) == 6


def test_discard_removes_data_but_keeps_the_claim(object_store: ObjectStore, tmp_path: Path) -> None:
    store = CheckpointStore(object_store)
    version = store.claim_version("d", owner="op")
    store.write_file("d", version, "tables/x.bin", b"123")
    assert store.discard("d", version) == 1
    assert [k.split("/")[-2] for k in object_store.list_keys("checkpoints/d")] == [".claims"]
    published = store.publish_folder("e", _folder(tmp_path, {"z": b"z"}), **FIELDS)
    with pytest.raises(InvalidArgumentError):
        store.discard("e", published.version)


def test_s3_large_objects_go_multipart(seaweed) -> None:  # noqa: ANN001
    store = s3_store(seaweed, "multipart", part_size=5 * 1024 * 1024)
    data = os.urandom(12 * 1024 * 1024)
    store.put_bytes("big.bin", data)
    assert store.etag("big.bin").endswith("-3")  # 3 parts of <= 5 MiB
    assert store.get_bytes("big.bin") == data
    store.put_bytes("small.bin", b"x" * 1000)
    assert "-" not in store.etag("small.bin")


def test_s3_unreachable_endpoint_fails_after_bounded_retries() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(UnavailableError):
        S3ObjectStore.connect("s3://bucket/p", endpoint=f"127.0.0.1:{port}", access_key="a", secret_key="b",
                              attempts=3, backoff_s=0.01)


def _s3_error(code: str, status: int) -> S3Error:
    return S3Error(types.SimpleNamespace(status=status), code, "message", "/r", "req", "host", "bucket", "key")


def test_transient_errors_are_retried_with_a_bound_and_4xx_are_not() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _s3_error("InternalError", 500) if len(calls) == 1 else urllib3.exceptions.ProtocolError("reset")
        return "ok"

    assert with_retries(flaky, what="t", attempts=5, backoff_s=0.001) == "ok" and len(calls) == 3
    for error, expected in [(_s3_error("NoSuchKey", 404), ObjectNotFoundError),
                            (_s3_error("AccessDenied", 403), S3Error)]:
        calls.clear()

        def failing(error: Exception = error) -> None:
            calls.append(1)
            raise error

        with pytest.raises(expected):
            with_retries(failing, what="t", attempts=5, backoff_s=0.001)
        assert len(calls) == 1, f"{error} must not be retried"
    calls.clear()

    def always_slow_down() -> None:
        calls.append(1)
        raise _s3_error("SlowDown", 503)

    with pytest.raises(UnavailableError):
        with_retries(always_slow_down, what="t", attempts=4, backoff_s=0.001)
    assert len(calls) == 4


def test_store_roundtrips_float_tables_bit_exactly(object_store: ObjectStore) -> None:
    from services.common.storage.tables import read_table, upload_table_checkpoint

    table = np.random.default_rng(0).standard_normal((1001, 6)).astype(np.float32)
    store = CheckpointStore(object_store)
    published = upload_table_checkpoint(store, "tables", {"user": table}, num_shards=4)
    assert np.array_equal(read_table(store, published, "user"), table)
