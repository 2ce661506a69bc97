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
from flexrl.store.backend import Backend, is_uri, open_backend

FORMAT = "flexrl.dataset"
# 3: a manifest lists only the shards its version added, and points to its parent (a delta);
#    every CHECKPOINT_EVERY-th version (a checkpoint) instead names segments, immutable files
#    that hold every earlier shard entry once. A commit writes metadata in proportion to what
#    it adds (a checkpoint: plus one segment and a line per segment), not to the history.
# 2: every manifest ends with `manifest_digest`, the sha256 of the rest of its bytes.
# Formats 1 and 2 list every shard and still read; version 1 manifests (no digest member) are
# covered only by the next version's `parent.digest`.
FORMAT_VERSION = 3
CHECKPOINT_EVERY = 100


def is_checkpoint(version: int) -> bool:
    """Whether version `version` of a format 3 dataset is a checkpoint (names segments for
    every shard before it, instead of building on its parent)."""
    return version == 1 or version % CHECKPOINT_EVERY == 0


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
SEGMENTS_DIR = "segments"
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


def check_dataset(address: str) -> str:
    """A dataset's address: its NAME (under the workspace's datasets/) or a URI whose last
    path segment is its name (`s3://bucket/prefix/NAME`, `file:///abs/dir/NAME`)."""
    if isinstance(address, str) and is_uri(address):
        check_name(address.rstrip("/").rpartition("/")[2], "dataset name (the URI's last part)")
        return address.rstrip("/")
    return check_name(address)


@dataclass(frozen=True)
class Ref:
    """A parsed reference: `name` (latest), `name@v3` (a version) or `name@tag`, where the
    name may be a URI (`s3://bucket/prefix/name@v3`); `name` is then its last part."""

    name: str
    version: int | None = None
    tag: str | None = None
    address: str = ""  # the name, or the URI without the @suffix

    def __post_init__(self) -> None:
        if not self.address:
            object.__setattr__(self, "address", self.name)

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.address}@v{self.version}"
        return f"{self.address}@{self.tag}" if self.tag else self.address


def parse_ref(ref: str) -> Ref:
    usage = "use NAME, NAME@vN or NAME@TAG (NAME may be a URI: s3://bucket/prefix/NAME)"
    if not isinstance(ref, str):
        raise FlexrlError(f"invalid dataset reference {ref!r}: {usage}")
    head, slash, last = ref.rpartition("/")  # a URI's '@' can only be in its last part here
    if last.count("@") > 1 or (not slash and ref.count("@") > 1):
        raise FlexrlError(f"invalid dataset reference {ref!r}: {usage}")
    name_part, at, suffix = last.partition("@")
    address = check_dataset(head + slash + name_part)
    name = address.rpartition("/")[2]
    if not at:
        return Ref(name, address=address)
    match = VERSION_RE.fullmatch(suffix)
    if match:
        version = int(match[1])
        if version < 1:
            raise FlexrlError(f"invalid dataset reference {ref!r}: versions start at v1")
        return Ref(name, version=version, address=address)
    return Ref(name, tag=check_tag(suffix), address=address)


def version_file(version: int) -> str:
    return f"v{version:06d}.json"


@dataclass(frozen=True)
class DatasetPaths:
    """Where the pieces of one dataset live: the keys of its objects under its root
    (`<workspace>/datasets/<name>/`, or the URI that names it) and the backend that holds
    them. `where(key)` says where one is, for messages."""

    backend: Backend
    name: str
    address: str  # what references call it: the name, or its URI

    @classmethod
    def of(cls, workspace: str | Path, address: str) -> DatasetPaths:
        address = check_dataset(address)
        name = address.rpartition("/")[2]
        if is_uri(address):
            return cls(open_backend(address), name, address)
        return cls(open_backend(Path(workspace) / DATASETS_DIR / name), name, name)

    def exists(self) -> bool:
        return bool(self.backend.children(""))

    def where(self, key: str) -> str:
        return self.backend.where(key)

    @staticmethod
    def segment(ref: SegmentRef) -> str:
        return f"{SEGMENTS_DIR}/{ref.file}"

    @staticmethod
    def version(version: int) -> str:
        return f"{VERSIONS_DIR}/{version_file(version)}"

    @staticmethod
    def tag(tag: str) -> str:
        return f"{TAGS_DIR}/{tag}.json"

    @staticmethod
    def shard(shard_id: str) -> str:
        return f"{SHARDS_DIR}/{shard_id}"

    @staticmethod
    def staging(shard_id: str) -> str:
        return f"{TMP_DIR}/{shard_id}"

    @staticmethod
    def lease(writer: str) -> str:
        return f"{LEASES_DIR}/{writer}.json"

    def list_versions(self) -> list[int]:
        names = self.backend.children(VERSIONS_DIR)
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


@dataclass(frozen=True)
class SegmentRef:
    """A segment: one immutable file of shard entries, named by the sha256 of its bytes, that
    a checkpoint reads instead of every manifest before it (see encode_segment)."""

    digest: str  # "sha256:<hex>" of the segment file's bytes, which is also its name
    shards: int
    first_version: int  # the versions whose added shards it holds
    last_version: int

    @property
    def file(self) -> str:
        return f"{self.digest.removeprefix('sha256:')}.json"

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "shards": self.shards,
            "versions": [self.first_version, self.last_version],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SegmentRef:
        first, last = (int(v) for v in obj["versions"])
        digest = str(obj["digest"])
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise ValueError(f"bad segment digest {digest!r}")
        return cls(digest, int(obj["shards"]), first, last)


def encode_segment(entries: list[ShardEntry]) -> bytes:
    """A segment's bytes: deterministic for the same entries (any writer folding the same
    versions writes the same file, under the same name)."""
    lines = ",\n  ".join(json.dumps(e.to_json(), allow_nan=False) for e in entries)
    return f'{{"format": "flexrl.segment", "shards": [\n  {lines}\n]}}\n'.encode()


def decode_segment(data: bytes, ref: SegmentRef, where: str) -> list[ShardEntry]:
    if digest_bytes(data) != ref.digest:
        raise DamagedManifestError(f"{where}: segment {ref.file} is damaged (digest mismatch)")
    try:
        entries = [ShardEntry.from_json(e) for e in json.loads(data)["shards"]]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise DamagedManifestError(f"{where}: segment {ref.file} is malformed ({e})") from None
    if len(entries) != ref.shards:
        raise DamagedManifestError(f"{where}: segment {ref.file} holds {len(entries)} shards")
    return entries


@dataclass
class Manifest:
    """One version of a dataset.

    `own` is what its file lists: in format 3 the shards this version added (in formats 1-2
    every shard). A checkpoint (v1 and every CHECKPOINT_EVERY-th version) also names
    `segments` holding every shard of the versions before it; a delta points to its parent.
    `shards`, every shard in episode order, is None until `catalog.read_manifest` resolves it
    (it is `own` when the file alone lists every shard). Totals cover the whole version."""

    name: str
    version: int
    created_at: str
    schema: Schema
    own: list[ShardEntry]
    added: list[str]  # ids of the shards this version added to its parent
    lineage: Lineage  # of this commit
    episodes: int
    steps: int
    nbytes: int
    shard_count: int
    parent_digest: str | None = None  # digest of version-1's manifest: a hash chain
    message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    checkpoint: bool = True  # names segments for what came before (or is format 1-2)
    segments: list[SegmentRef] = field(default_factory=list)
    shards: list[ShardEntry] | None = None

    def __post_init__(self) -> None:
        if self.shards is None and self.checkpoint and not self.segments:
            self.resolve([])

    @classmethod
    def on_top_of(
        cls,
        parent: Manifest | None,
        parent_digest: str | None,
        shards: list[ShardEntry],
        *,
        name: str,
        schema: Schema,
        lineage: Lineage,
        message: str | None = None,
        segments: list[SegmentRef] | None = None,
    ) -> Manifest:
        """The next version after `parent` (None: the first), adding `shards`. A checkpoint
        (is_checkpoint) must be given the `segments` that hold every shard before it."""
        version = parent.version + 1 if parent else 1
        checkpoint = is_checkpoint(version)
        if checkpoint != (segments is not None or parent is None):
            raise ValueError(f"v{version}: segments go with checkpoints, and only there")
        return cls(
            name=name,
            version=version,
            created_at=utc_now(),
            schema=schema,
            own=list(shards),
            added=[s.id for s in shards],
            lineage=lineage,
            episodes=(parent.episodes if parent else 0) + sum(s.episodes for s in shards),
            steps=(parent.steps if parent else 0) + sum(s.steps for s in shards),
            nbytes=(parent.nbytes if parent else 0) + sum(s.nbytes for s in shards),
            shard_count=(parent.shard_count if parent else 0) + len(shards),
            parent_digest=parent_digest,
            message=message,
            checkpoint=checkpoint,
            segments=segments or [],
        )

    def resolve(self, before: list[ShardEntry]) -> None:
        """Set `shards` to `before` (every shard of the versions before its own entries) plus
        its own; refuse when the counts disagree with its totals."""
        shards = before + self.own
        if (len(shards), sum(s.episodes for s in shards), sum(s.steps for s in shards)) != (
            self.shard_count,
            self.episodes,
            self.steps,
        ):
            raise DamagedManifestError(
                f"{self.name}@v{self.version}: manifest is damaged (its totals disagree with "
                "its shards and those before it)"
            )
        self.shards = shards

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
            "shard_count": self.shard_count,
            "checkpoint": self.checkpoint,
            "segments": [s.to_json() for s in self.segments],
            "schema": self.schema.to_json(),
            "commit": {"added_shards": self.added, "lineage": self.lineage.to_json()},
            "extra": self.extra,
            "shards": [s.to_json() for s in self.own],
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
            own = [ShardEntry.from_json(s) for s in obj["shards"]]
            # Formats 1 and 2 list every shard; in 3 a checkpoint names segments for the
            # versions before it and a delta its parent.
            checkpoint = format_version < 3 or obj["checkpoint"] is True
            segments = [SegmentRef.from_json(s) for s in obj.get("segments") or []]
            if int(obj["version"]) == 1 and not (checkpoint and not segments):
                raise ValueError("v1 must be a checkpoint without segments")
            if segments and not checkpoint:
                raise ValueError("a delta names no segments")
            totals = [int(obj[k]) for k in ("episodes", "steps", "bytes")]
            if format_version < 3:  # their totals were never read: the shards are the truth
                totals = [sum(getattr(s, k) for s in own) for k in ("episodes", "steps", "nbytes")]
            return cls(
                name=obj["name"],
                version=int(obj["version"]),
                created_at=obj["created_at"],
                schema=Schema.from_json(obj["schema"]),
                own=own,
                added=list(commit.get("added_shards", [])),
                lineage=Lineage.from_json(commit.get("lineage")),
                episodes=totals[0],
                steps=totals[1],
                nbytes=totals[2],
                shard_count=int(obj["shard_count"]) if format_version >= 3 else len(own),
                parent_digest=parent.get("digest"),
                message=obj.get("message"),
                extra=obj.get("extra") or {},
                checkpoint=checkpoint,
                segments=segments,
            )
        except FlexrlError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise DamagedManifestError(
                f"{where}: manifest is malformed ({type(e).__name__}: {e})"
            ) from None
