"""The storage backends, local and on a real S3-compatible server on loopback, give the same
operations with the same guarantees."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexrl.errors import FlexrlError
from flexrl.store.backend import NotFound, open_backend


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path: Path):
    if request.param == "local":
        return open_backend(tmp_path / "root")
    return open_backend(request.getfixturevalue("s3"))


def test_the_operations(backend) -> None:
    with pytest.raises(NotFound):
        backend.read("versions/v000001.json")
    assert backend.create("versions/v000001.json", b"one")
    assert not backend.create("versions/v000001.json", b"two")  # the first writer wins
    assert backend.read("versions/v000001.json") == b"one"
    backend.replace("leases/w.json", b"a")
    backend.replace("leases/w.json", b"b")
    assert backend.read("leases/w.json") == b"b"
    backend.create("shards/s1/zarr.json", b"{}")
    backend.create("shards/s1/obs/c.0.0", b"xx")
    backend.create("shards/s2/zarr.json", b"{}")
    assert [o.key for o in backend.list("shards")] == [
        "shards/s1/obs/c.0.0", "shards/s1/zarr.json", "shards/s2/zarr.json"
    ]  # fmt: skip
    assert [o.size for o in backend.list("shards/s1")] == [2, 2]
    assert backend.children("shards") == ["s1", "s2"]
    assert backend.children("nothing") == [] and backend.list("nothing") == []
    backend.delete("shards/s2/zarr.json")
    backend.delete("shards/s2/zarr.json")  # absent already: fine
    assert not backend.exists("shards/s2/zarr.json") and backend.exists("shards/s1/zarr.json")
    assert backend.tree("shards/s1")[0] == 4 and backend.tree("nothing") == (0, None)


def test_a_shard_is_complete_once_finished_and_never_looks_complete_while_deleted(
    backend,
) -> None:
    upload = backend.begin_shard("shards/a", "tmp/a", durable=False)
    upload.put("obs/c.0.0", b"chunk")
    upload.put("zarr.json", b"{}")  # the root last
    upload.finish()
    assert [o.key for o in backend.list("shards/a")] == ["shards/a/obs/c.0.0", "shards/a/zarr.json"]
    assert backend.list("tmp") == []
    backend.delete_shard("shards/a", "tmp")
    assert backend.list("shards/a") == [] and not backend.exists("shards/a/zarr.json")
    broken = backend.begin_shard("shards/b", "tmp/b", durable=False)
    broken.put("obs/c.0.0", b"chunk")
    broken.discard()
    assert backend.list("shards") == [] and backend.list("tmp") == []


def test_an_unreachable_endpoint_fails_in_one_line(s3: str, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    backend = open_backend("s3://flexrl/x")
    with pytest.raises(FlexrlError) as info:
        backend.read("versions/v000001.json")
    assert "\n" not in str(info.value) and "s3://flexrl/x" in str(info.value)
