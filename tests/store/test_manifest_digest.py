"""Every byte of every manifest is covered by a digest verify checks; tags' digests are compared;
format 1 manifests (no self-digest) still read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from flexrl.errors import FlexrlError
from flexrl.store import Lineage, ShardWriter, open_dataset, set_tag, verify
from flexrl.store.format import DamagedManifestError, Manifest

from .conftest import cli, random_episode, tree_digest, write_episodes

LINEAGE = Lineage(producer_run="20261204-run-abc", code_version="0123abcd", source="here")


@pytest.fixture
def two_versions(ws: Path, rng: np.random.Generator) -> Path:
    write_episodes(ws, "walk", [random_episode(rng, seed=i) for i in range(4)], lineage=LINEAGE)
    write_episodes(ws, "walk", [random_episode(rng, seed=9)], lineage=LINEAGE, message="more")
    return ws


def manifest_path(ws: Path, version: int) -> Path:
    return ws / f"datasets/walk/versions/v{version:06d}.json"


def flip(path: Path, needle: bytes) -> None:
    """Flip one bit of the byte just after `needle` (in the field it names)."""
    data = bytearray(path.read_bytes())
    offset = data.index(needle) + len(needle)
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_every_single_bit_flip_of_a_manifest_is_caught(two_versions: Path) -> None:
    data = manifest_path(two_versions, 2).read_bytes()
    Manifest.from_bytes(data, "walk@v2")
    for offset in range(len(data)):
        for bit in (0x01, 0x20):
            damaged = bytearray(data)
            damaged[offset] ^= bit
            with pytest.raises(DamagedManifestError):
                Manifest.from_bytes(bytes(damaged), "walk@v2")


FIELDS = [
    b'"producer_run": "',
    b'"code_version": "',
    b'"created_at": "',
    b'"message": "',
    b'"format_version": ',
    b'"observations/c.0.0": "sha256:',  # a chunk's digest: the manifest is damaged, not the chunk
    b'"manifest_digest": "sha256:',
]


@pytest.mark.parametrize(
    "needle", FIELDS, ids=[f.decode().split('"')[1].split("/")[0] for f in FIELDS]
)
def test_flipped_byte_in_the_latest_manifest_fails_verify(two_versions: Path, needle) -> None:
    ws = two_versions
    flip(manifest_path(ws, 2), needle)
    before = tree_digest(ws)
    report = verify("walk", ws)
    assert not report.ok
    assert [(p.shard, p.array) for p in report.problems] == [(None, None)]
    assert report.problems[0].message.startswith("is damaged")
    out = cli("data", "verify", "walk", "--workspace", str(ws))
    assert out.code == 1 and "corrupt walk@v2: manifest is damaged" in out.stdout
    assert "shard" not in out.stdout
    out = cli("data", "info", "walk", "--workspace", str(ws))
    assert out.code == 2 and out.stderr.startswith("error: walk@v2: manifest is damaged")
    assert out.stderr.count("\n") == 1
    with pytest.raises(FlexrlError, match="manifest is damaged"):
        open_dataset("walk", ws)
    assert verify("walk@v1", ws).ok and len(open_dataset("walk@v1", ws)) == 4
    assert tree_digest(ws) == before


def test_tag_digest_is_compared(two_versions: Path) -> None:
    ws = two_versions
    set_tag("walk@v1", "best", ws)
    assert open_dataset("walk@best", ws).version == 1 and verify("walk@best", ws).ok
    tag = ws / "datasets/walk/tags/best.json"
    obj = json.loads(tag.read_bytes())
    obj["digest"] = obj["digest"][:-1] + ("0" if obj["digest"][-1] != "0" else "1")
    tag.write_text(json.dumps(obj))
    with pytest.raises(FlexrlError, match="tag walk@best records digest"):
        open_dataset("walk@best", ws)
    for ref in ("walk@best", "walk@v1"):
        out = cli("data", "verify", ref, "--workspace", str(ws))
        assert out.code == 1 and "tag walk@best records digest" in out.stdout, out
    assert verify("walk@v2", ws).ok
    # Moving the tag on purpose records the current digest again.
    assert cli("data", "tag", "walk@v1", "best", "--force", "--workspace", str(ws)).code == 0
    assert verify("walk@best", ws).ok


def as_format_1(path: Path) -> None:
    """Rewrite a manifest as flexrl wrote it before manifest digests (format_version 1)."""
    text = path.read_text()
    text = re.sub(r',\n "manifest_digest": "sha256:[0-9a-f]{64}"', "", text)
    path.write_text(text.replace('"format_version": 3', '"format_version": 1'))


def test_format_1_datasets_still_read_verify_and_grow(ws: Path, rng) -> None:
    episodes = [random_episode(rng, seed=i) for i in range(3)]
    write_episodes(ws, "walk", episodes)
    as_format_1(manifest_path(ws, 1))
    assert b"manifest_digest" not in manifest_path(ws, 1).read_bytes()
    ds = open_dataset("walk", ws)
    assert [e.seed for e in ds] == [0, 1, 2] and verify("walk", ws).ok
    set_tag("walk@v1", "old", ws)

    with ShardWriter("walk", ws, durable=False) as writer:
        writer.add(random_episode(rng, seed=3))
    v2 = manifest_path(ws, 2).read_bytes()
    assert b'"format_version": 3' in v2 and b'"manifest_digest"' in v2
    assert verify("walk", ws).ok and len(open_dataset("walk", ws)) == 4

    # A format 1 manifest is covered by the next version's parent digest, and by its tags.
    flip(manifest_path(ws, 1), b'"created_at": "')
    assert any("hash chain broken" in p.message for p in verify("walk@v2", ws).problems)
    assert any("tag walk@old" in p.message for p in verify("walk@v1", ws).problems)
