"""The storage backends, local and on a real S3-compatible server on loopback, give the same
six operations with the same guarantees (WORK IN PROGRESS: issue 15 item 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexrl.errors import FlexrlError
from flexrl.store.backend import NotFound, open_backend

from .s3server import s3_server


@pytest.fixture(scope="module")
def s3_env():
    with s3_server() as env:
        yield env


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path: Path, monkeypatch):
    if request.param == "local":
        return open_backend(tmp_path / "root")
    env = request.getfixturevalue("s3_env")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return open_backend(f"s3://flexrl/{tmp_path.name}")


def test_the_six_operations(backend) -> None:
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
    assert backend.children("shards") == ["s1"]


def test_an_unreachable_endpoint_fails_in_one_line(s3_env, monkeypatch) -> None:
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    backend = open_backend("s3://flexrl/x")
    with pytest.raises(FlexrlError) as info:
        backend.read("versions/v000001.json")
    assert "\n" not in str(info.value) and "s3://flexrl/x" in str(info.value)
