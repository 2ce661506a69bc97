"""Format 3 manifests: deltas on a parent, periodic checkpoints, and old formats still growing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flexrl.errors import FlexrlError
from flexrl.store import ShardWriter, gc, open_dataset, verify
from flexrl.store import format as fmt
from flexrl.store.format import DamagedManifestError, digest_bytes

from .conftest import cli, random_episode, write_episodes


def manifest_file(ws: Path, version: int) -> Path:
    return ws / "datasets/walk/versions" / fmt.version_file(version)


@pytest.fixture
def ten_versions(ws: Path, rng, monkeypatch: pytest.MonkeyPatch) -> Path:
    """v1..v10, one episode (seed = version - 1) each; checkpoints at v1, v4 and v8."""
    monkeypatch.setattr(fmt, "CHECKPOINT_EVERY", 4)
    for seed in range(10):
        write_episodes(ws, "walk", [random_episode(rng, seed=seed)])
    return ws


def test_deltas_list_what_they_add_and_every_version_reads(ten_versions: Path) -> None:
    ws = ten_versions
    raw = {v: json.loads(manifest_file(ws, v).read_bytes()) for v in range(1, 11)}
    assert [v for v in raw if raw[v]["checkpoint"]] == [1, 4, 8]
    for v, obj in raw.items():
        assert obj["format_version"] == 3 and obj["shard_count"] == obj["episodes"] == v
        assert [s["id"] for s in obj["shards"]] == obj["commit"]["added_shards"]
    # A checkpoint names segments for the versions before it: v4 one of 3 shards, v8 that one
    # and one of the 4 from v4 to v7.
    segments = [[(s["shards"], s["versions"]) for s in raw[v]["segments"]] for v in (4, 8)]
    assert segments == [[(3, [1, 3])], [(3, [1, 3]), (4, [4, 7])]]
    assert len(list((ws / "datasets/walk/segments").iterdir())) == 2
    # A commit's metadata is what it adds: every manifest is about as big, whatever came before.
    size = [manifest_file(ws, v).stat().st_size for v in raw]
    assert max(size) < 1.1 * min(size)
    for v in range(1, 11):  # time travel: each version is its first v episodes
        ds = open_dataset(f"walk@v{v}", ws)
        assert [e.seed for e in ds] == list(range(v)) and len(ds.manifest.shards) == v
        assert verify(f"walk@v{v}", ws).ok
    assert gc("walk", ws) == []  # every shard is referenced by some manifest file
    log = json.loads(cli("data", "log", "walk", "--json", "--workspace", str(ws)).stdout)
    assert [row["added_episodes"] for row in log] == [1] * 10


def test_a_damaged_segment_damages_its_checkpoints(ten_versions: Path) -> None:
    ws = ten_versions
    segment = json.loads(manifest_file(ws, 4).read_bytes())["segments"][0]
    first = ws / "datasets/walk" / fmt.DatasetPaths.segment(fmt.SegmentRef.from_json(segment))
    good = first.read_bytes()
    first.write_bytes(good.replace(b'"episodes": 1', b'"episodes": 2', 1))
    for v in (4, 5, 8, 10):  # every version whose checkpoint names it
        with pytest.raises(DamagedManifestError, match="is damaged"):
            open_dataset(f"walk@v{v}", ws)
        assert not verify(f"walk@v{v}", ws).ok
    assert len(open_dataset("walk@v3", ws)) == 3
    first.unlink()
    with pytest.raises(DamagedManifestError, match=r"segment .* is missing"):
        open_dataset("walk@v10", ws)
    first.write_bytes(good)
    assert len(open_dataset("walk@v10", ws)) == 10 and verify("walk@v10", ws).ok


def test_a_damaged_delta_damages_the_versions_built_on_it_only(ten_versions: Path) -> None:
    ws = ten_versions
    path = manifest_file(ws, 6)
    path.write_bytes(path.read_bytes().replace(b'"message": null', b'"message": "edited"'))
    with pytest.raises(DamagedManifestError, match="walk@v6: manifest is damaged"):
        open_dataset("walk@v6", ws)
    with pytest.raises(DamagedManifestError, match="hash chain broken"):
        open_dataset("walk@v7", ws)
    problems = verify("walk@v7", ws).problems
    assert len(problems) == 1 and "hash chain broken" in problems[0].message
    # Before it, and from the next checkpoint on, nothing depends on v6.
    for v in (5, 8, 9, 10):
        assert len(open_dataset(f"walk@v{v}", ws)) == v and verify(f"walk@v{v}", ws).ok

    path.unlink()
    with pytest.raises(DamagedManifestError, match="v6's manifest, which it builds on, is missing"):
        open_dataset("walk@v7", ws)


def test_a_checkpoint_refuses_to_build_on_a_damaged_chain(ws: Path, rng, monkeypatch) -> None:
    monkeypatch.setattr(fmt, "CHECKPOINT_EVERY", 4)
    for seed in range(3):
        write_episodes(ws, "walk", [random_episode(rng, seed=seed)])
    path = manifest_file(ws, 2)
    path.write_bytes(path.read_bytes().replace(b'"message": null', b'"message": "edited"'))
    with pytest.raises(FlexrlError, match="hash chain broken"):  # v4 would list every shard
        write_episodes(ws, "walk", [random_episode(rng, seed=3)])
    assert sorted(p.name for p in manifest_file(ws, 1).parent.iterdir())[-1] == "v000003.json"


def as_format_2(ws: Path) -> None:
    """Rewrite every version as flexrl wrote it before deltas (format 2: every manifest lists
    every shard), keeping the hash chain."""
    versions = sorted((ws / "datasets/walk/versions").glob("v*.json"))
    shards: list = []
    parent = None
    for path in versions:
        obj = json.loads(path.read_bytes())
        shards += obj["shards"]
        for key in ("checkpoint", "segments", "shard_count", "manifest_digest"):
            del obj[key]
        obj.update(format_version=2, shards=list(shards))
        if parent is not None:
            obj["parent"]["digest"] = parent
        content = json.dumps(obj, indent=1)[: -len("\n}")].encode()
        digest = digest_bytes(content + b"\n}\n")
        data = content + f',\n "manifest_digest": "{digest}"\n}}\n'.encode()
        path.write_bytes(data)
        parent = digest_bytes(data)


def test_format_2_datasets_read_verify_and_grow_in_format_3(ws: Path, rng) -> None:
    for seed in range(3):
        write_episodes(ws, "walk", [random_episode(rng, seed=seed)])
    as_format_2(ws)
    assert b'"format_version": 2' in manifest_file(ws, 3).read_bytes()
    assert [e.seed for e in open_dataset("walk", ws)] == [0, 1, 2] and verify("walk", ws).ok

    with ShardWriter("walk", ws, durable=False) as writer:
        writer.add(random_episode(rng, seed=3))
    v4 = json.loads(manifest_file(ws, 4).read_bytes())
    assert v4["format_version"] == 3 and not v4["checkpoint"] and len(v4["shards"]) == 1
    assert [e.seed for e in open_dataset("walk", ws)] == [0, 1, 2, 3]
    assert all(verify(f"walk@v{v}", ws).ok for v in range(1, 5)) and gc("walk", ws) == []
