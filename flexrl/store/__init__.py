"""flexrl's trajectory store: versioned, immutable Zarr v3 shards of episodes (numpy + zarr only).

The format is specified in FORMAT.md beside this file. Main entry points:

    ShardWriter(name, workspace)      buffer episodes, write shards, commit versions
    open_dataset("name@v3", ws)       read a version: episodes, arrays, statistics
    resolve("name@v3", ws)            (name, version, manifest digest) for lineage
    verify(ref, ws) / gc(name, ws)    integrity and housekeeping
"""

from flexrl.store.catalog import ResolvedVersion, list_datasets, resolve, set_tag
from flexrl.store.episode import Episode, make_episode
from flexrl.store.format import Lineage, Manifest, Ref, Schema, parse_ref
from flexrl.store.maintenance import gc, verify
from flexrl.store.reader import Dataset, DatasetStats, open_dataset
from flexrl.store.writer import ShardWriter
from flexrl.store.zstore import CorruptShardError

__all__ = [
    "CorruptShardError",
    "Dataset",
    "DatasetStats",
    "Episode",
    "Lineage",
    "Manifest",
    "Ref",
    "ResolvedVersion",
    "Schema",
    "ShardWriter",
    "gc",
    "list_datasets",
    "make_episode",
    "open_dataset",
    "parse_ref",
    "resolve",
    "set_tag",
    "verify",
]
