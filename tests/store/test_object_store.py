"""Datasets on a real S3-compatible server on loopback (moto's server mode, started and stopped
here; see s3server.py): the same store, addressed by URI, with the same guarantees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flexrl.errors import FlexrlError
from flexrl.store import ShardWriter, gc, open_dataset, verify
from flexrl.store.backend import open_backend
from flexrl.store.objcache import ObjectCache
from flexrl.store.zstore import CorruptShardError

from ._worker import episode as worker_episode
from .conftest import assert_same_episode, cli, random_episode, write_episodes
from .s3server import s3_server

WORKER = str(Path(__file__).with_name("_worker.py"))


def objects(uri: str) -> dict[str, bytes]:
    backend = open_backend(uri)
    return {o.key: backend.read(o.key) for o in backend.list("")}


def test_a_dataset_on_s3_works_like_a_local_one(s3: str, tmp_path: Path, rng) -> None:
    episodes = [random_episode(rng, seed=i) for i in range(7)]
    uri, ws = f"{s3}/walk", tmp_path / "ws"
    for part in (episodes[:4], episodes[4:]):  # two versions, the second with 2 shards
        write_episodes(ws, "walk", part, shard_episodes=2)
        write_episodes(ws, uri, part, shard_episodes=2)
    local, remote = open_dataset("walk", ws), open_dataset(uri)
    assert remote.ref == f"{uri}@v2" and len(remote) == len(local) == 7
    for i, episode in enumerate(episodes):
        assert_same_episode(remote.episode(i), episode)
    assert [s.files for s in remote.manifest.shards] == [s.files for s in local.manifest.shards]
    assert verify(uri).ok and gc(uri) == []
    assert not any(key.startswith("tmp/") for key in objects(uri))  # written in place
    assert not any(key.startswith("leases/") for key in objects(uri))  # released

    # The CLI takes the URI wherever it takes a name.
    assert cli("data", "tag", f"{uri}@v1", "first").code == 0
    info = json.loads(cli("data", "info", f"{uri}@first", "--json").stdout)
    assert info["ref"] == f"{uri}@v1" and sum(s["episodes"] for s in info["shards"]) == 4
    log = json.loads(cli("data", "log", uri, "--json").stdout)
    assert [row["version"] for row in log] == [1, 2]
    listed = json.loads(cli("data", "ls", s3, "--json").stdout)
    assert [(r["name"], r["latest"]) for r in listed] == [(uri, f"{uri}@v2")]
    assert cli("data", "verify", uri).code == 0

    # Minari export from S3, import back into S3: the same episodes.
    out = tmp_path / "minari"
    exported = cli("data", "export", uri, "--format", "minari", "--out", str(out), "-w", str(ws))
    assert exported.code == 0, exported.stderr
    data = str(out / "walk-v2")  # Minari's id: NAME-vN
    imported = cli("data", "import", data, "--name", f"{s3}/again", "-w", str(ws))
    assert imported.code == 0, imported.stderr
    again = open_dataset(f"{s3}/again")
    for i in range(7):
        assert_same_episode(again.episode(i), remote.episode(i))


def test_eight_writers_twenty_commits_each_lose_nothing(s3: str) -> None:
    uri, writers, commits = f"{s3}/walk", 8, 20
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, "commits", "unused", uri, str(w), str(commits)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(writers)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    total = writers * commits
    final = open_dataset(uri)
    assert final.version == total and len(final) == total
    seeds = final.index.seeds
    assert sorted(seeds.tolist()) == sorted(
        w * 1000 + k for w in range(writers) for k in range(commits)
    )
    for w in range(writers):  # each writer's episodes in its own commit order
        assert seeds[(seeds // 1000) == w].tolist() == [w * 1000 + k for k in range(commits)]
    obs = final.array("observations")[:, 0]
    np.testing.assert_array_equal(obs, np.repeat(seeds, final.episode_lengths).astype(np.float32))
    for v in (1, 2, 50, 99, 100, 101, total - 1):  # deltas and a checkpoint, each a prefix
        ds = open_dataset(f"{uri}@v{v}")
        np.testing.assert_array_equal(ds.index.seeds, seeds[:v])
    assert verify(uri).ok and gc(uri) == []


def test_a_writer_killed_mid_upload(s3: str) -> None:
    uri = f"{s3}/walk"
    signal_file = Path(os.environ["FLEXRL_CACHE_DIR"]).with_name("signal")
    proc = subprocess.Popen(
        [sys.executable, WORKER, "crash", "unused", uri, "mid-shard", str(signal_file)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not signal_file.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = objects(uri)
    assert open_dataset(uri).version == 1 and verify(uri).ok  # the last version is intact
    orphans = gc(uri)
    assert sorted(o.kind for o in orphans) == ["lease", "shard"]
    assert all(o.status == "deletable" for o in orphans)  # its writer is dead (this host)
    shard = next(o for o in orphans if o.kind == "shard")
    assert shard.path.startswith(f"{uri}/shards/") and shard.nbytes > 0
    assert objects(uri) == before  # listing deletes nothing
    gc(uri, apply=True)
    left = objects(uri)
    assert not any(k.startswith(("leases/", shard.key)) for k in left)
    assert verify(uri).ok and gc(uri) == []
    with ShardWriter(uri) as writer:  # the dataset takes new versions as before
        writer.add_episode(**worker_episode(1, 0))
    assert open_dataset(uri).version == 2


def test_a_flipped_byte_is_refused_and_a_damaged_cache_is_not_trusted(s3: str, rng) -> None:
    uri = f"{s3}/walk"
    episode = random_episode(rng, length=30, seed=3)
    write_episodes(Path("unused"), uri, [episode])
    backend = open_backend(uri)
    entry = open_dataset(uri).manifest.shards[0]
    key = f"shards/{entry.id}/observations/c.0.0"
    good = backend.read(key)
    backend.replace(key, good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(CorruptShardError, match="observations"):
        open_dataset(uri).episode(0)
    report = verify(uri)
    assert not report.ok and "observations/c.0.0 is corrupted" in str(report.problems[0])
    assert cli("data", "verify", uri).code == 1

    backend.replace(key, good)
    assert_same_episode(open_dataset(uri).episode(0), episode)  # read, verified, cached
    cache = Path(os.environ["FLEXRL_CACHE_DIR"])
    hex_ = entry.files["observations/c.0.0"].removeprefix("sha256:")
    cached = cache / hex_[:2] / hex_
    assert cached.read_bytes() == good
    cached.write_bytes(b"garbage")
    from flexrl.store import reader

    reader._shard_cache.clear()
    assert_same_episode(open_dataset(uri).episode(0), episode)  # fetched again, not trusted
    assert cached.read_bytes() == good


def test_bad_credentials_and_an_unreachable_endpoint_fail_in_one_line(
    s3: str, monkeypatch, tmp_path: Path
) -> None:
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    with s3_server(check_credentials=True) as strict:
        monkeypatch.setenv("AWS_ENDPOINT_URL", strict["AWS_ENDPOINT_URL"])
        result = cli("data", "info", f"{s3}/walk")
    assert result.code == 2 and "access denied" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and secret not in result.stderr

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    start = time.monotonic()
    ws = tmp_path / "ws"
    args = ["--dataset", f"{s3}/walk", "--episodes", "1", "--workspace", str(ws)]
    result = cli("collect", "--policy", "random", *args)
    assert result.code == 2 and "cannot reach http://127.0.0.1:9" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and time.monotonic() - start < 60
    assert not (ws / "runs").exists()  # refused before anything was recorded

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.1.2.3:9000")  # not loopback
    result = cli("data", "info", f"{s3}/walk")
    assert result.code == 2 and "plain http is allowed only for a loopback" in result.stderr


def test_collect_into_s3_records_no_secret(s3: str, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    uri = f"{s3}/random"
    result = cli(
        "collect", "--policy", "random", "--dataset", uri, "--episodes", "2", "--seed", "5",
        "--json", "--workspace", str(ws),
    )  # fmt: skip
    assert result.code == 0, result.stderr
    ds = open_dataset(uri)
    assert len(ds) == 2 and ds.schema.observations.dtype == "<f4"
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    stored = [*objects(uri).values(), *(p.read_bytes() for p in ws.rglob("*") if p.is_file())]
    assert not any(secret.encode() in data for data in stored)
    assert secret not in result.stdout + result.stderr
    runs = json.loads(cli("runs", "ls", "--json", "--workspace", str(ws)).stdout)
    assert any(uri in json.dumps(run) for run in runs)  # lineage names the URI


def test_the_object_cache_stays_within_its_bound(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path / "c", max_bytes=8_000)
    for i in range(20):
        cache.put(f"sha256:{i:064x}", bytes(900))
        time.sleep(0.01)  # distinct mtimes: least recently used first
    held = sum(p.stat().st_size for p in (tmp_path / "c").rglob("*") if p.is_file())
    assert held <= 8_000
    assert cache.get(f"sha256:{19:064x}") == bytes(900)  # the newest stay
    assert cache.get(f"sha256:{0:064x}") is None  # the oldest went


def test_a_cache_write_that_fails_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    cache = ObjectCache(tmp_path / "c", max_bytes=8_000)

    def disk_full(*args) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    cache.put(f"sha256:{1:064x}", bytes(900))  # only costs speed: no error
    assert cache.get(f"sha256:{1:064x}") is None
    assert [p for p in (tmp_path / "c").rglob("*") if p.is_file()] == []


def test_a_bad_uri_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for ref, message in (
        ("s3://flexrl/prefix/Bad Name", "invalid dataset name"),
        ("ftp://host/walk", "unknown storage scheme"),
        ("s3:///walk", "no bucket"),
    ):
        result = cli("data", "info", ref, "--workspace", str(tmp_path))
        assert result.code == 2 and message in result.stderr, (ref, result.stderr)
    with pytest.raises(FlexrlError, match="not a URI"):
        from flexrl.store.catalog import list_datasets

        list_datasets(tmp_path, str(tmp_path))


def test_finetune_trains_on_a_dataset_on_s3(s3: str, tmp_path: Path) -> None:
    from tests.offline.conftest import write_dataset
    from tests.offline.test_finetune_cli import finetune

    uri = f"{s3}/walk"
    write_dataset(Path("unused"), uri)
    ws = tmp_path / "ws"
    result = finetune(ws, "dt", "--dataset", f"{uri}@v1", "--name", "dt-s3")
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(cli("runs", "show", "dt-s3", "--json", "--workspace", str(ws)).stdout)
    assert f"{uri}@v1" in json.dumps(record["run"]["inputs"])  # lineage names the URI
    assert list(Path(os.environ["FLEXRL_CACHE_DIR"]).rglob("*"))  # chunks were cached
