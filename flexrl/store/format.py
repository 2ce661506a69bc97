"""The on-disk format of a dataset, in code: names, references, paths, schema and manifest.

FORMAT.md beside this file is the specification; this module is its single implementation,
so the writer, the reader, verify and gc agree on every path and field.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

import numpy as np

from flexrl.errors import FlexrlError

FORMAT = "flexrl.dataset"
# 2: every manifest ends with `manifest_digest`, the sha256 of the rest of its bytes.
# Version 1 manifests (no such member) still read; they are covered only by the next
# version's `parent.digest`.
FORMAT_VERSION = 2
DIGEST_MEMBER = "manifest_digest"
# The last member of a version 2 manifest, exactly as written (see Manifest.to_bytes).
_DIGEST_TAIL = re.compile(rb',\n "manifest_digest": "(sha256:[0-9a-f]{64})"\n\}\n\Z')
_TAIL = b"\n}\n"

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_RE = re.compile(r"^v([0-9]+)$")
VERSION_FILE_RE = re.compile(r"^v([0-9]{6,})\.json$")

DATASETS_DIR = "datasets"
VERSIONS_DIR = "versions"
TAGS_DIR = "tags"
SHARDS_DIR = "shards"
TMP_DIR = "tmp"
LEASES_DIR = "leases"

# Per-step arrays, concatenated along time over every episode of a shard.
STEP_ARRAYS = ("observations", "actions", "rewards", "terminations", "truncations")
GOALS = "goals"
INFO_PREFIX = "infos/"
# Per-episode arrays (one row per episode).
EPISODE_ARRAYS = (
    "episode_offsets",  # E+1 int64: episode e is steps [offsets[e], offsets[e+1])
    "final_observations",  # E x obs: the observation after the last step (Minari's obs[T])
    "episode_seed",  # int64, -1 when the episode was not seeded
    "episode_return",  # float64 sum of rewards
    "episode_task",  # int32 index into the shard's attrs["tasks"], -1 for none
    "episode_policy",  # int32 index into the shard's attrs["policies"], -1 for none
)
NO_SEED = -1


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def digest_bytes(data: bytes | memoryview) -> str:
    return f"sha256:{sha256(data).hexdigest()}"


def check_name(name: str, what: str = "dataset name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise FlexrlError(
            f"invalid {what} {name!r}: use 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_tag(tag: str) -> str:
    check_name(tag, "tag")
    if VERSION_RE.fullmatch(tag):
        raise FlexrlError(f"invalid tag {tag!r}: v<N> is reserved for version numbers")
    return tag


@dataclass(frozen=True)
class Ref:
    """A parsed reference: `name` (latest), `name@v3` (a version) or `name@tag`."""

    name: str
    version: int | None = None
    tag: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@v{self.version}"
        return f"{self.name}@{self.tag}" if self.tag else self.name


def parse_ref(ref: str) -> Ref:
    if not isinstance(ref, str) or ref.count("@") > 1:
        raise FlexrlError(f"invalid dataset reference {ref!r}: use NAME, NAME@vN or NAME@TAG")
    name, _, suffix = ref.partition("@")
    check_name(name)
    if not _:
        return Ref(name)
    match = VERSION_RE.fullmatch(suffix)
    if match:
        version = int(match[1])
        if version < 1:
            raise FlexrlError(f"invalid dataset reference {ref!r}: versions start at v1")
        return Ref(name, version=version)
    return Ref(name, tag=check_tag(suffix))


def version_file(version: int) -> str:
    return f"v{version:06d}.json"


@dataclass(frozen=True)
class DatasetPaths:
    """Where the pieces of one dataset live: `<workspace>/datasets/<name>/...`."""

    root: Path

    @classmethod
    def of(cls, workspace: str | Path, name: str) -> DatasetPaths:
        return cls(Path(workspace) / DATASETS_DIR / check_name(name))

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def versions(self) -> Path:
        return self.root / VERSIONS_DIR

    @property
    def tags(self) -> Path:
        return self.root / TAGS_DIR

    @property
    def shards(self) -> Path:
        return self.root / SHARDS_DIR

    @property
    def tmp(self) -> Path:
        return self.root / TMP_DIR

    @property
    def leases(self) -> Path:
        return self.root / LEASES_DIR

    def version(self, version: int) -> Path:
        return self.versions / version_file(version)

    def tag(self, tag: str) -> Path:
        return self.tags / f"{tag}.json"

    def list_versions(self) -> list[int]:
        try:
            names = os.listdir(self.versions)
        except FileNotFoundError:
            return []
        return sorted(int(m[1]) for n in names if (m := VERSION_FILE_RE.fullmatch(n)))


def new_shard_id() -> str:
    """Time, host, pid and randomness: unique without coordination, and tells gc whose it is.
    Writer leases are named the same way."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{this_host()}-{os.getpid()}-{secrets.token_hex(4)}"


def shard_owner(shard_id: str) -> tuple[str, int] | None:
    """(host hash, pid) of the writer that made a shard directory, from its name."""
    parts = shard_id.split("-")
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def this_host() -> str:
    """6 hex digits of the host name (FLEXRL_HOST_ID replaces it where hosts share a name)."""
    name = os.environ.get("FLEXRL_HOST_ID") or socket.gethostname()
    return sha256(name.encode()).hexdigest()[:6]


# -- schema ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArraySpec:
    """Shape of one step (without the time axis) and dtype (numpy's `dtype.str`, e.g. '<f4')."""

    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of_steps(cls, array: np.ndarray) -> ArraySpec:
        return cls(tuple(int(n) for n in array.shape[1:]), array.dtype.str)

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ArraySpec:
        return cls(tuple(int(n) for n in obj["shape"]), str(obj["dtype"]))

    def describe(self) -> str:
        return f"{np.dtype(self.dtype).name}{list(self.shape)}"


@dataclass(frozen=True)
class Schema:
    """What every step of every episode of a dataset looks like; fixed by its first version."""

    observations: ArraySpec
    actions: ArraySpec
    rewards: ArraySpec
    goals: ArraySpec | None = None
    infos: tuple[tuple[str, ArraySpec], ...] = ()

    def step_arrays(self) -> dict[str, ArraySpec]:
        """Every per-step array a shard of this schema holds, by its name in the shard."""
        arrays = {
            "observations": self.observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "terminations": ArraySpec((), "|b1"),
            "truncations": ArraySpec((), "|b1"),
        }
        if self.goals is not None:
            arrays[GOALS] = self.goals
        for key, spec in self.infos:
            arrays[INFO_PREFIX + key] = spec
        return arrays

    def to_json(self) -> dict[str, Any]:
        return {
            "observations": self.observations.to_json(),
            "actions": self.actions.to_json(),
            "rewards": self.rewards.to_json(),
            "goals": self.goals.to_json() if self.goals else None,
            "infos": {k: v.to_json() for k, v in self.infos},
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Schema:
        return cls(
            observations=ArraySpec.from_json(obj["observations"]),
            actions=ArraySpec.from_json(obj["actions"]),
            rewards=ArraySpec.from_json(obj["rewards"]),
            goals=ArraySpec.from_json(obj["goals"]) if obj.get("goals") else None,
            infos=tuple(
                (k, ArraySpec.from_json(v)) for k, v in sorted(obj.get("infos", {}).items())
            ),
        )

    def mismatch(self, other: Schema) -> str | None:
        """One line naming the first difference, or None when both are the same."""
        mine, theirs = self.step_arrays(), other.step_arrays()
        for key in sorted(set(mine) | set(theirs)):
            if key not in mine:
                return f"{key} is not in the dataset"
            if key not in theirs:
                return f"{key} is missing (the dataset has {mine[key].describe()})"
            if mine[key] != theirs[key]:
                return f"{key} is {theirs[key].describe()}, the dataset has {mine[key].describe()}"
        return None


# -- manifest --------------------------------------------------------------------------------


class DamagedManifestError(FlexrlError):
    """A manifest's bytes are not what was committed (bad JSON, fields, or digest)."""


@dataclass
class Lineage:
    """Where data came from; passed in as plain data by the caller (the store imports no
    workspace code), so `flexrl runs lineage` can join datasets to runs."""

    producer_run: str | None = None
    policy_digest: str | None = None  # "sha256:..." of the policy checkpoint
    code_version: str | None = None  # git commit or package version
    source: str | None = None  # e.g. "minari:D4RL/door/human-v2" for imports

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any] | None) -> Lineage:
        obj = obj or {}
        return cls(
            **{k: obj.get(k) for k in ("producer_run", "policy_digest", "code_version", "source")}
        )


@dataclass
class ShardEntry:
    """One shard as a version lists it: counts, stored size, layout, file digests, lineage."""

    id: str
    episodes: int
    steps: int
    nbytes: int  # bytes on disk (sum of its files)
    created_at: str
    lineage: Lineage
    arrays: dict[str, dict[str, Any]]  # name -> {shape, dtype, chunks, codecs}
    files: dict[str, str]  # path inside the shard -> "sha256:<hex>" of the file bytes

    @property
    def path(self) -> str:
        return f"{SHARDS_DIR}/{self.id}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "episodes": self.episodes,
            "steps": self.steps,
            "bytes": self.nbytes,
            "created_at": self.created_at,
            "lineage": self.lineage.to_json(),
            "arrays": self.arrays,
            "files": self.files,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ShardEntry:
        return cls(
            id=obj["id"],
            episodes=int(obj["episodes"]),
            steps=int(obj["steps"]),
            nbytes=int(obj["bytes"]),
            created_at=obj["created_at"],
            lineage=Lineage.from_json(obj.get("lineage")),
            arrays=obj["arrays"],
            files=obj["files"],
        )


@dataclass
class Manifest:
    """One version of a dataset: every shard it holds, in episode order."""

    name: str
    version: int
    created_at: str
    schema: Schema
    shards: list[ShardEntry]
    added: list[str]  # ids of the shards this version added to its parent
    lineage: Lineage  # of this commit
    parent_digest: str | None = None  # digest of version-1's manifest: a hash chain
    message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def episodes(self) -> int:
        return sum(s.episodes for s in self.shards)

    @property
    def steps(self) -> int:
        return sum(s.steps for s in self.shards)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "created_at": self.created_at,
            "parent": None
            if self.version == 1
            else {"version": self.version - 1, "digest": self.parent_digest},
            "message": self.message,
            "episodes": self.episodes,
            "steps": self.steps,
            "bytes": self.nbytes,
            "schema": self.schema.to_json(),
            "commit": {"added_shards": self.added, "lineage": self.lineage.to_json()},
            "extra": self.extra,
            "shards": [s.to_json() for s in self.shards],
        }

    def to_bytes(self) -> bytes:
        """Indented JSON with one line per shard: readable, and encoded by json's C encoder
        (an indented dump of every shard is pure Python, and a manifest grows with the data)."""
        obj = self.to_json()
        shards = obj.pop("shards")
        head = json.dumps(obj, indent=1, allow_nan=False)
        lines = ",\n  ".join(json.dumps(s, allow_nan=False) for s in shards)
        body = f"[\n  {lines}\n ]" if shards else "[]"
        content = (head[: -len("\n}")] + f',\n "shards": {body}').encode()
        # The last member is the digest of every byte before it (plus the closing brace), so
        # a flipped byte anywhere, the newest version's included, is caught without a chain.
        digest = digest_bytes(content + _TAIL)
        return content + f',\n "{DIGEST_MEMBER}": "{digest}"'.encode() + _TAIL

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        damaged = f"{where}: manifest is damaged"
        tail = _DIGEST_TAIL.search(data, max(0, len(data) - 128))
        if tail is not None and digest_bytes(data[: tail.start()] + _TAIL) != tail[1].decode():
            raise DamagedManifestError(f"{damaged} (its bytes do not match its manifest_digest)")
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DamagedManifestError(f"{where}: manifest is not valid JSON ({e})") from None
        try:
            if obj.get("format") != FORMAT:
                raise DamagedManifestError(f"{where}: manifest is not a flexrl dataset manifest")
            format_version = obj.get("format_version", 0)
            if format_version > FORMAT_VERSION:
                raise FlexrlError(
                    f"{where}: format version {format_version} is newer than this flexrl "
                    f"reads ({FORMAT_VERSION}); upgrade flexrl"
                )
            # Only version 1 may lack the digest; a digest member that is not the exact last
            # line was edited (a flipped byte in its name, its value or the format version).
            if tail is None and (format_version != 1 or DIGEST_MEMBER in obj):
                raise DamagedManifestError(
                    f"{damaged} (its manifest_digest is missing or malformed)"
                )
            parent = obj.get("parent") or {}
            commit = obj.get("commit") or {}
            return cls(
                name=obj["name"],
                version=int(obj["version"]),
                created_at=obj["created_at"],
                schema=Schema.from_json(obj["schema"]),
                shards=[ShardEntry.from_json(s) for s in obj["shards"]],
                added=list(commit.get("added_shards", [])),
                lineage=Lineage.from_json(commit.get("lineage")),
                parent_digest=parent.get("digest"),
                message=obj.get("message"),
                extra=obj.get("extra") or {},
            )
        except FlexrlError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise DamagedManifestError(
                f"{where}: manifest is malformed ({type(e).__name__}: {e})"
            ) from None
