"""Zarr stores that digest what they write and check what they read.

Every object of a shard (each chunk file and each zarr.json) has its sha256 in the manifest.
flexrl normally writes and reads chunk files directly (chunkio); these stores serve the zarr-python
fallback (dtypes chunkio does not take). The writer's store hashes each object as zarr hands it
over (no second read of the data); the reader's store hashes each object it fetches from disk and
compares before zarr decodes it, so a flipped byte is refused instead of decoded into wrong
numbers. `check_object` is the one check both paths use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.core.buffer.core import default_buffer_prototype
from zarr.storage import LocalStore

from flexrl.errors import FlexrlError
from flexrl.store.format import digest_bytes


class CorruptShardError(FlexrlError):
    """Stored bytes differ from the digest a committed version recorded for them."""


def array_of(key: str) -> str:
    """The array a store key belongs to ('observations/c.3.0' or 'observations/c/3/0' ->
    'observations')."""
    if key.endswith("zarr.json"):
        return key[: -len("zarr.json")].rstrip("/") or "(group metadata)"
    head, _, last = key.rpartition("/")
    if last.startswith("c.") or last == "c":
        return head
    return key.split("/c/")[0]


def check_object(label: str, expected: dict[str, str], key: str, data: bytes | None) -> None:
    """Refuse (CorruptShardError) an object that is missing, unlisted or not the bytes the
    manifest's digest names."""
    want = expected.get(key)
    if data is None:
        if want is not None:
            raise CorruptShardError(f"shard {label}: array {array_of(key)!r} lost its file {key!r}")
        raise CorruptShardError(f"shard {label}: file {key!r} is not listed in the manifest")
    if want is None:
        raise CorruptShardError(f"shard {label}: file {key!r} is not listed in the manifest")
    if digest_bytes(data) != want:
        raise CorruptShardError(
            f"shard {label}: array {array_of(key)!r} is corrupted "
            f"(digest mismatch in {key!r}); run `flexrl data verify`"
        )


class DigestingStore(LocalStore):
    """A LocalStore that records `sha256:<hex>` of every object written to it."""

    def __init__(self, root: Path | str, *, read_only: bool = False) -> None:
        super().__init__(root, read_only=read_only)
        self.digests: dict[str, str] = {}
        self.metadata: dict[str, bytes] = {}
        self.rewritten: set[str] = set()

    def with_read_only(self, read_only: bool = False) -> DigestingStore:
        raise NotImplementedError("a digesting store is for writing only")

    def finish(self) -> None:
        """Re-hash from disk the few objects zarr wrote more than once (group metadata)."""
        for key in self.rewritten:
            data = (Path(self.root) / key).read_bytes()
            self.digests[key] = digest_bytes(data)
            if key.endswith("zarr.json"):
                self.metadata[key] = data
        self.rewritten.clear()

    def _record(self, key: str, value: Buffer) -> None:
        view = value.as_buffer_like()
        if key in self.digests:  # concurrent rewrites may land in any order: see finish()
            self.rewritten.add(key)
        self.digests[key] = digest_bytes(view)
        if key.endswith("zarr.json"):
            self.metadata[key] = bytes(view)

    async def _set(self, key: str, value: Buffer, exclusive: bool = False) -> None:
        self._record(key, value)
        await super()._set(key, value, exclusive=exclusive)

    def set_sync(self, key: str, value: Buffer) -> None:
        self._record(key, value)
        super().set_sync(key, value)


class VerifyingStore(LocalStore):
    """A read-only zarr store that serves only objects whose bytes match `expected` digests.

    Objects come from `fetch(key)` (the shard's backend: a directory or an object store; None
    when absent); the LocalStore base only supplies zarr's store interface. Every fetch is
    checked (not only the first): one sha256 pass over the stored (compressed) bytes.
    """

    def __init__(
        self, fetch: Callable[[str], bytes | None], expected: dict[str, str], label: str
    ) -> None:
        super().__init__(Path("/flexrl-shard") / label, read_only=True)  # a name, never opened
        self.fetch = fetch
        self.expected = expected
        self.label = label

    async def _open(self, *, mode: Any = None) -> None:
        self._is_open = True  # nothing on disk to check: objects come from fetch

    def with_read_only(self, read_only: bool = False) -> VerifyingStore:
        return VerifyingStore(self.fetch, self.expected, self.label)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyingStore) and other.label == self.label

    __hash__ = LocalStore.__hash__

    def check(self, key: str, data: Buffer | None) -> None:
        if data is None and key not in self.expected:
            return  # zarr probes for optional objects: absent and not expected is fine
        check_object(
            self.label, self.expected, key, None if data is None else data.as_buffer_like()
        )

    def _fetch(self, key: str, prototype: BufferPrototype) -> Buffer | None:
        raw = self.fetch(key)
        data = None if raw is None else prototype.buffer.from_bytes(raw)
        self.check(key, data)
        return data

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        if not self._is_open:
            await self._open()
        prototype = prototype or default_buffer_prototype()
        data = await asyncio.to_thread(self._fetch, key, prototype)
        if data is None or byte_range is None:
            return data
        # Ranged reads (unused by our layout) are served from the verified whole object.
        return _slice(data, byte_range, prototype)

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        self._ensure_open_sync()
        prototype = prototype or default_buffer_prototype()
        data = self._fetch(key, prototype)
        if data is None or byte_range is None:
            return data
        return _slice(data, byte_range, prototype)

    async def get_partial_values(self, prototype: BufferPrototype, key_ranges: Any) -> list:
        return [await self.get(k, prototype, r) for k, r in key_ranges]


def _slice(data: Buffer, byte_range: ByteRequest, prototype: BufferPrototype) -> Buffer:
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

    raw = bytes(data.as_buffer_like())
    if isinstance(byte_range, RangeByteRequest):
        raw = raw[byte_range.start : byte_range.end]
    elif isinstance(byte_range, OffsetByteRequest):
        raw = raw[byte_range.offset :]
    elif isinstance(byte_range, SuffixByteRequest):
        raw = raw[-byte_range.suffix :] if byte_range.suffix else b""
    return prototype.buffer.from_bytes(raw)
