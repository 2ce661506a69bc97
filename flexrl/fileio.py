"""File helpers shared by the workspace and the store: crash-safe writes and content digests.

No torch and no zarr here, so the store stays light.

Every file another process may read is written to a private temporary name in the same
directory, flushed to disk, then renamed over its final name: a reader sees the old content or
the new one, never half of either, and a kill -9 leaves at most a stray temporary file.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def tmp_path_for(path: Path) -> Path:
    """A unique temporary sibling of `path` (same directory, so the rename is atomic)."""
    return path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}.{secrets.token_hex(4)}")


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    """Write `data` to `path` all at once (fsync=False: a file that may be lost in a power cut,
    never half-written)."""
    path = Path(path)
    tmp = tmp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)  # a failed write() names no file; say which one
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, dumps_json(obj))


def create_exclusive(path: str | Path, data: bytes) -> bool:
    """Write `data` to `path` only if `path` does not exist yet; return False if it does.

    The content is complete before the name appears (written to a temporary file, then
    hard-linked into place, which fails if the name is taken), so a reader never sees a
    half-written file and two writers racing for one name cannot both win.
    """
    path = Path(path)
    tmp = tmp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """`sha256:<hex>` of a file's bytes, read in chunks (checkpoints can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"
