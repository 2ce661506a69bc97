"""Where a dataset's objects live: a local directory, or an object store addressed by URI.

The store reads and writes through these operations only, and each backend gives them with
the same guarantees:

    read(key) -> bytes             the object; NotFound when there is none
    create(key, data) -> bool      only if absent (exclusive create; S3's If-None-Match: *);
                                   the bytes are complete before the key appears
    replace(key, data)             atomic: a reader sees the old bytes or the new ones
    delete(key)                    gone (absent already is fine)
    exists(key) -> bool
    list(prefix) -> [ObjectInfo]   every object under prefix/, recursively, sorted by key
    tree(prefix) -> (bytes, mtime) the size and newest mtime (None: nothing) under prefix/
    children(prefix) -> [name]     the names one level below prefix/ (objects or "directories")
    begin_shard(key, staging)      a ShardUpload: objects of one shard, complete at finish()
    delete_shard(key, trash)       a shard gone, never looking complete while it goes

Keys are '/'-separated paths relative to the dataset's root (`versions/v000001.json`).

`open_backend(location)` takes a directory or a URI: `file:///abs/dir`, `s3://bucket/prefix`,
`gs://bucket/prefix`, `az://container/prefix` (the schemes obstore gives). Credentials and
endpoint come from the standard environment variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, ...; plain http only for a loopback endpoint); nothing
secret is kept anywhere else, and messages name the URI, never a credential.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from flexrl.errors import FlexrlError
from flexrl.fileio import TMP_PREFIX, atomic_write_bytes, create_exclusive

URI_SCHEMES = ("s3", "gs", "az", "abfs", "file")
SHARD_ROOT = "zarr.json"  # a shard's group metadata: written last, deleted first
DELETED = ".deleted"  # suffix of a local shard directory renamed away to be deleted


class NotFound(FlexrlError):
    """No object under that key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float  # seconds since the epoch, on the storage's clock


class ShardUpload(Protocol):
    def put(self, key: str, data: bytes | memoryview) -> int: ...  # thread-safe; the size
    def finish(self) -> None: ...
    def discard(self) -> None: ...


class Backend(Protocol):
    location: str
    remote: bool

    def where(self, key: str) -> str: ...
    def read(self, key: str) -> bytes: ...
    def create(self, key: str, data: bytes) -> bool: ...
    def replace(self, key: str, data: bytes) -> None: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[ObjectInfo]: ...
    def tree(self, prefix: str) -> tuple[int, float | None]: ...
    def children(self, prefix: str) -> list[str]: ...
    def begin_shard(self, key: str, staging: str, durable: bool) -> ShardUpload: ...
    def delete_shard(self, key: str, trash: str) -> None: ...


def is_uri(location: str | Path) -> bool:
    return isinstance(location, str) and "://" in location and urlparse(location).scheme != ""


def open_backend(location: str | Path) -> Backend:
    if not is_uri(location):
        return LocalBackend(Path(location))
    parsed = urlparse(str(location))
    if parsed.scheme == "file":
        return LocalBackend(Path(parsed.path))
    if parsed.scheme not in URI_SCHEMES:
        raise FlexrlError(
            f"{location}: unknown storage scheme {parsed.scheme!r}: use a directory or "
            "s3://, gs://, az:// or file:// URI"
        )
    if not parsed.netloc:
        raise FlexrlError(f"{location}: no bucket in the URI (s3://BUCKET/PREFIX/NAME)")
    return ObjectBackend(str(location))


class LocalBackend:
    """A directory. create: temporary file + hard link (fileio.create_exclusive); replace:
    temporary file + rename; both fsynced. A shard is written in `staging` (tmp/<id>) and
    renamed into place, so a shard directory that exists is complete."""

    remote = False

    def __init__(self, root: Path):
        self.root = root
        self.location = str(root)

    def where(self, key: str) -> str:
        return str(self.root / key)

    def read(self, key: str) -> bytes:
        try:
            return (self.root / key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"{self.where(key)}: no such file") from None

    def create(self, key: str, data: bytes) -> bool:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        return create_exclusive(path, data)

    def replace(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def list(self, prefix: str) -> list[ObjectInfo]:
        base = self.root / prefix
        found = []
        for dirpath, _, names in os.walk(base):
            for name in names:
                path = Path(dirpath) / name
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue  # deleted meanwhile
                key = path.relative_to(self.root).as_posix()
                found.append(ObjectInfo(key, stat.st_size, stat.st_mtime))
        return sorted(found, key=lambda o: o.key)

    def tree(self, prefix: str) -> tuple[int, float | None]:
        nbytes, newest = _tree(self.list(prefix))
        try:  # an empty directory (a writer killed at once) has an age too
            mtime = (self.root / prefix).stat().st_mtime
        except FileNotFoundError:
            return nbytes, newest
        return nbytes, mtime if newest is None else max(newest, mtime)

    def children(self, prefix: str) -> list[str]:
        try:
            names = os.listdir(self.root / prefix)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in names if not n.startswith(TMP_PREFIX))

    def begin_shard(self, key: str, staging: str, durable: bool) -> ShardUpload:
        return _LocalShard(self.root / staging, self.root / key, durable)

    def delete_shard(self, key: str, trash: str) -> None:
        """Renamed into `trash` (tmp/) first, so a shard directory that exists is complete (a
        writer checks that before it commits)."""
        path = self.root / key
        if path.parent == self.root / trash:
            doomed = path  # being written, or already out of the way
        else:
            doomed = self.root / trash / f"{path.name}{DELETED}"
            doomed.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(path, doomed)
            except FileNotFoundError:
                return
        shutil.rmtree(doomed, ignore_errors=True)


class _LocalShard:
    """Files created with O_EXCL in tmp/<id> (fsynced when durable), then one atomic rename."""

    def __init__(self, staging: Path, final: Path, durable: bool):
        self.staging, self.final, self.durable = staging, final, durable
        self.dirs = {staging}
        self._lock = threading.Lock()
        staging.mkdir(parents=True)

    def put(self, key: str, data: bytes | memoryview) -> int:
        path = self.staging / key
        if path.parent not in self.dirs:
            with self._lock:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.dirs.update(p for p in path.parents if self.staging in p.parents)
                self.dirs.add(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        return len(data)

    def finish(self) -> None:
        if self.durable:
            for directory in sorted(self.dirs):
                _fsync(directory)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.staging, self.final)  # complete shards only in shards/
        if self.durable:  # the rename itself survives a power cut before the commit
            _fsync(self.final.parent)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        shutil.rmtree(self.final, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _loopback(endpoint: str) -> bool:
    return urlparse(endpoint).hostname in ("127.0.0.1", "localhost", "::1")


class ObjectBackend:
    """An object store through obstore (Rust's object_store): conditional puts for create,
    plain puts for replace (an object PUT is atomic), retries with exponential backoff on
    transient errors, bounded timeouts so an unreachable endpoint fails instead of hanging.
    A shard's objects are put in place (no rename exists); its root `zarr.json` goes last and
    is deleted first, so a shard whose root object exists is complete."""

    remote = True

    def __init__(self, uri: str):
        from obstore.store import from_url

        self.location = uri.rstrip("/")
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
        options: dict = {"connect_timeout": timedelta(seconds=5), "timeout": timedelta(seconds=120)}
        if endpoint.startswith("http://"):
            if not _loopback(endpoint):
                raise FlexrlError(
                    f"AWS_ENDPOINT_URL={endpoint}: plain http is allowed only for a loopback "
                    "endpoint (127.0.0.1, localhost); use https"
                )
            options["allow_http"] = True
        retry = {
            "max_retries": int(os.environ.get("FLEXRL_S3_RETRIES", "4")),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=5),
                "base": 2,
            },
            "retry_timeout": timedelta(seconds=60),
        }
        try:
            self.store = from_url(self.location, client_options=options, retry_config=retry)
        except Exception as e:  # a malformed URI or configuration: say which
            problem = f"cannot open the object store ({_first(e)})"
            raise FlexrlError(f"{self.location}: {problem}") from None

    def where(self, key: str) -> str:
        return f"{self.location}/{key}"

    def _fail(self, what: str, e: Exception) -> FlexrlError:
        """One line that says what to fix (retries with backoff are already spent)."""
        from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

        text = _first(e)
        if isinstance(e, PermissionDeniedError | UnauthenticatedError) or " 403 " in text:
            text = (
                "access denied (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's "
                "permissions)"
            )
        elif "error sending request" in text or "onnection refused" in text:
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the storage service"
            text = f"cannot reach {endpoint} (check AWS_ENDPOINT_URL and the network): {text}"
        return FlexrlError(f"{self.location}: {what} failed: {text}")

    def read(self, key: str) -> bytes:
        import obstore

        try:
            return bytes(obstore.get(self.store, key).bytes())
        except FileNotFoundError:
            raise NotFound(f"{self.where(key)}: no such object") from None
        except Exception as e:
            raise self._fail(f"reading {key}", e) from None

    def create(self, key: str, data: bytes) -> bool:
        import obstore
        from obstore.exceptions import AlreadyExistsError

        try:
            obstore.put(self.store, key, data, mode="create")
        except AlreadyExistsError:
            return False
        except Exception as e:
            raise self._fail(f"writing {key}", e) from None
        return True

    def replace(self, key: str, data: bytes | memoryview) -> None:
        import obstore

        try:
            obstore.put(self.store, key, data)
        except Exception as e:
            raise self._fail(f"writing {key}", e) from None

    def delete(self, key: str) -> None:
        import obstore

        try:
            obstore.delete(self.store, key)
        except FileNotFoundError:
            return
        except Exception as e:
            raise self._fail(f"deleting {key}", e) from None

    def exists(self, key: str) -> bool:
        import obstore

        try:
            obstore.head(self.store, key)
        except FileNotFoundError:
            return False
        except Exception as e:
            raise self._fail(f"reading {key}", e) from None
        return True

    def list(self, prefix: str) -> list[ObjectInfo]:
        import obstore

        try:
            metas = obstore.list(self.store, prefix=prefix.rstrip("/") + "/").collect()
        except Exception as e:
            raise self._fail(f"listing {prefix}", e) from None
        return sorted(
            (ObjectInfo(m["path"], m["size"], m["last_modified"].timestamp()) for m in metas),
            key=lambda o: o.key,
        )

    def tree(self, prefix: str) -> tuple[int, float | None]:
        return _tree(self.list(prefix))

    def children(self, prefix: str) -> list[str]:
        import obstore

        base = prefix.rstrip("/") + "/" if prefix else ""
        try:
            found = obstore.list_with_delimiter(self.store, prefix=base or None)
        except Exception as e:
            raise self._fail(f"listing {prefix or '/'}", e) from None
        names = [p.removeprefix(base).rstrip("/") for p in found["common_prefixes"]]
        names += [m["path"].removeprefix(base) for m in found["objects"]]
        return sorted(names)

    def begin_shard(self, key: str, staging: str, durable: bool) -> ShardUpload:
        return _ObjectShard(self, key)

    def delete_shard(self, key: str, trash: str) -> None:
        keys = [o.key for o in self.list(key)]
        root = f"{key}/{SHARD_ROOT}"
        for k in sorted(keys, key=lambda k: k != root):  # the root first: never "complete"
            self.delete(k)


class _ObjectShard:
    """Objects put in place under shards/<id>/; the writer puts the root zarr.json last."""

    def __init__(self, backend: ObjectBackend, key: str):
        self.backend, self.key = backend, key

    def put(self, key: str, data: bytes | memoryview) -> int:
        self.backend.replace(f"{self.key}/{key}", data)
        return len(data)

    def finish(self) -> None:
        pass

    def discard(self) -> None:
        self.backend.delete_shard(self.key, "")  # no trash: objects go one by one


def _tree(objects: list[ObjectInfo]) -> tuple[int, float | None]:
    return sum(o.size for o in objects), max((o.mtime for o in objects), default=None)


def _first(e: Exception) -> str:
    """The first line of an error, without anything that looks like a credential."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        secret = os.environ.get(var)
        if secret:
            text = text.replace(secret, "***")
    return text
