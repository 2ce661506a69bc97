"""Corruption is caught by verify and by the reader; the `flexrl data` commands; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flexrl.errors import FlexrlError
from flexrl.store import CorruptShardError, open_dataset, resolve, verify

from .conftest import cli, cli_subprocess, random_episode, tree_digest, write_episodes


@pytest.fixture
def two_versions(ws: Path, rng: np.random.Generator) -> Path:
    write_episodes(ws, "walk", [random_episode(rng, seed=i) for i in range(6)], shard_episodes=3)
    write_episodes(ws, "walk", [random_episode(rng, seed=10 + i) for i in range(3)])
    return ws


def _flip(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _last_shard(ws: Path, ref: str = "walk") -> Path:
    ds = open_dataset(ref, ws)
    return ws / "datasets/walk/shards" / ds.manifest.shards[-1].id


@pytest.mark.parametrize("target", ["observations/c.0.0", "rewards/zarr.json", "zarr.json"])
def test_flipped_byte_caught_by_verify_and_reader(two_versions: Path, target: str) -> None:
    ws = two_versions
    shard = _last_shard(ws)  # added by v2 only
    _flip(shard / target)
    array = target.split("/")[0] if "/" in target else "(group metadata)"

    report = verify("walk", ws)
    assert not report.ok
    assert [(p.shard, p.array) for p in report.problems] == [(shard.name, array)]
    out = cli("data", "verify", "walk@v2", "--workspace", str(ws))
    assert out.code == 1 and shard.name in out.stdout and array in out.stdout
    out = cli("data", "verify", "walk", "--json", "--workspace", str(ws))
    assert json.loads(out.stdout)["problems"][0]["array"] == array

    with pytest.raises(CorruptShardError, match=f"{shard.name}.*{array}"):
        ds = open_dataset("walk", ws)
        ds.episode(len(ds) - 1)
        ds.array("observations")
        ds.array("rewards")
    # v1 does not contain that shard: it still reads and verifies.
    assert verify("walk@v1", ws).ok
    assert len(list(open_dataset("walk@v1", ws))) == 6


def test_missing_chunk_is_not_read_as_zeros(two_versions: Path) -> None:
    shard = _last_shard(two_versions)
    (shard / "actions/c.0.0").unlink()
    with pytest.raises(CorruptShardError, match="actions"):
        open_dataset("walk", two_versions).array("actions")
    assert "missing" in str(verify("walk", two_versions).problems[0])


def test_edited_old_manifest_breaks_the_hash_chain(two_versions: Path) -> None:
    path = two_versions / "datasets/walk/versions/v000001.json"
    path.write_text(path.read_text().replace('"message": null', '"message": "edited"'))
    assert any("hash chain" in str(p) for p in verify("walk@v2", two_versions).problems)


def test_cli_listing_commands(two_versions: Path) -> None:
    ws = str(two_versions)
    out = cli("data", "ls", "--json", "--workspace", ws)
    rows = json.loads(out.stdout)
    assert out.code == 0 and rows[0]["name"] == "walk" and rows[0]["episodes"] == 9
    assert rows[0]["digest"] == resolve("walk@v2", two_versions).digest
    out = cli("data", "log", "walk", "--json", "--workspace", ws)
    assert [r["added_episodes"] for r in json.loads(out.stdout)] == [6, 3]
    out = cli("data", "info", "walk@v1", "--json", "--workspace", ws)
    info = json.loads(out.stdout)
    assert info["stats"]["episodes"] == 6 and len(info["shards"]) == 2
    assert info["digest"] == resolve("walk@v1", two_versions).digest
    out = cli("data", "tag", "walk@v1", "baseline", "--workspace", ws)
    assert out.code == 0 and "walk@v1" in out.stdout
    assert open_dataset("walk@baseline", two_versions).version == 1
    assert cli("data", "tag", "walk@v1", "baseline", "--workspace", ws).code == 0  # idempotent
    out = cli("data", "tag", "walk@v2", "baseline", "--workspace", ws)
    assert out.code == 2 and "--force" in out.stderr
    assert cli("data", "tag", "walk@v2", "baseline", "--force", "--workspace", ws).code == 0
    assert open_dataset("walk@baseline", two_versions).version == 2
    for args in (["ls"], ["info", "walk"], ["log", "walk"], ["verify", "walk"], ["gc", "walk"]):
        out = cli("data", *args, "--workspace", ws)
        assert out.code == 0, (args, out.stderr)
        assert out.stdout.strip()


BAD_INPUT = [
    (["info", "../x"], "invalid dataset name '../x'"),
    (["info", "A B"], "invalid dataset name 'A B'"),
    (["info", ""], "invalid dataset name ''"),
    (["info", "nope"], "unknown dataset 'nope'"),
    (["info", "walk@v9"], "unknown version walk@v9"),
    (["info", "walk@best"], "unknown tag walk@best"),
    (["log", "../x"], "invalid dataset name"),
    (["log", "nope"], "unknown dataset"),
    (["verify", "walk@v0"], "versions start at v1"),
    (["tag", "walk@v7", "best"], "unknown version"),
    (["tag", "walk", "v3"], "reserved"),
    (["tag", "walk", "../t"], "invalid tag"),
    (["gc", "A B"], "invalid dataset name"),
    (["gc", "nope", "--apply"], "unknown dataset"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_exits_2_and_changes_nothing(
    two_versions: Path, args: list[str], message: str
) -> None:
    before = tree_digest(two_versions)
    out = cli("data", *args, "--workspace", str(two_versions))
    assert out.code == 2, out
    assert message in out.stderr and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert tree_digest(two_versions) == before


def test_corrupt_manifest_via_real_subprocess(two_versions: Path) -> None:
    (two_versions / "datasets/walk/versions/v000002.json").write_text("{oops")
    before = tree_digest(two_versions)
    out = cli_subprocess("data", "info", "walk", "--workspace", str(two_versions))
    assert out.returncode == 2 and "walk@v2: manifest is not valid JSON" in out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1
    assert tree_digest(two_versions) == before
    out = cli("data", "info", "walk@v1", "--workspace", str(two_versions))
    assert out.code == 0
    out = cli("data", "gc", "walk", "--apply", "--workspace", str(two_versions))
    assert out.code == 2 and "not valid JSON" in out.stderr  # gc refuses to guess


def test_corrupted_shard_error_exits_2_in_info(two_versions: Path) -> None:
    _flip(_last_shard(two_versions) / "episode_offsets/c.0")
    out = cli("data", "info", "walk", "--workspace", str(two_versions))
    assert out.code == 2 and "corrupted" in out.stderr
    with pytest.raises(FlexrlError):
        open_dataset("walk", two_versions).stats()
