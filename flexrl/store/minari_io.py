"""Minari interoperability through the real `minari` package, both ways.

Export writes a dataset `minari.load_dataset` loads: observations in Minari's T+1 convention
(the episode's final observation last), actions, rewards, terminations, truncations, seeds.
flexrl's extra per-step data travels as Minari infos with T+1 rows (row 0, the reset info
Minari records, is zeros): `infos[key]` for each info key and `infos["flexrl_goals"]` for
goals; task, policy and instruction go in each episode's `options`. Import reverses this, so
flexrl -> Minari -> flexrl gives byte-identical arrays. minari (and gymnasium) are imported lazily.

Given the env the data came from (`flexrl.collection.dataset_env`), export records its spec and
its true spaces, so `recover_environment()` rebuilds it (flexrl's Humanoid tasks as their
registered ids, e.g. `flexrl/HumanoidWalk-v0` with the recipe's kwargs; flexrl must be
importable there). Without one (imported or hand-written data) there is no spec, and float
spaces are unbounded: nothing in the data says what the bounds were.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from flexrl.errors import FlexrlError
from flexrl.store.catalog import dataset_paths
from flexrl.store.episode import Episode, make_episode
from flexrl.store.format import ArraySpec, Lineage, Manifest
from flexrl.store.reader import open_dataset
from flexrl.store.writer import ShardWriter

GOALS_INFO = "flexrl_goals"
TASK_OPTION = "flexrl_task"
POLICY_OPTION = "flexrl_policy"
INSTRUCTION_OPTION = "flexrl_instruction"
FORMATS = ("hdf5", "arrow")
BATCH_EPISODES = 256
SCHEMA_KEY = "flexrl_schema"  # in Minari's metadata.json: exact shapes for the way back
# Metadata flexrl does not know (who made the data, where the code lives): Minari warns for each.
_UNKNOWN_METADATA_WARNINGS = (
    r"`code_permalink` is set to None",
    r"`author` is set to None",
    r"`author_email` is set to None",
)


@contextlib.contextmanager
def _minari_root(root: Path | None) -> Iterator[None]:
    """Point Minari at `root` (its datasets directory) for the duration of the block."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    if root is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if root is not None:
            if previous is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = previous


def _box(spec: ArraySpec):
    from gymnasium import spaces

    dtype = np.dtype(spec.dtype)
    if np.issubdtype(dtype, np.floating):
        low, high = -np.inf, np.inf
    elif dtype == np.bool_:
        low, high = 0, 1
    else:
        low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
    return spaces.Box(low=low, high=high, shape=spec.shape, dtype=dtype)


def _env(env: Mapping[str, Any]):
    """The spec that rebuilds `env` (an EnvConfig as JSON) and its spaces, as collect made it."""
    from pydantic import BaseModel

    from flexrl.config import EnvConfig
    from flexrl.envs import make_flat_env

    made = make_flat_env(EnvConfig.model_validate(env))
    try:
        spec = made.spec
        assert spec is not None  # gym.make always sets it
        # Minari stores the spec as JSON: the recipe's sections go in as plain dicts, which the
        # Humanoid env takes as well.
        kwargs = {
            k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v
            for k, v in spec.kwargs.items()
        }
        return replace(spec, kwargs=kwargs), made.observation_space, made.action_space
    finally:
        made.close()


def _spaces(ds, env: Mapping[str, Any] | None):
    """(spec or None, observation space, action space) for the export of `ds`."""
    if env is None:
        return None, _box(ds.schema.observations), _box(ds.schema.actions)
    spec, obs_space, act_space = _env(env)
    out = []
    for what, space, array in (
        ("observations", obs_space, ds.schema.observations),
        ("actions", act_space, ds.schema.actions),
    ):
        stored = np.dtype(array.dtype)
        both_float = np.issubdtype(space.dtype, np.floating) and np.issubdtype(stored, np.floating)
        if space.shape != tuple(array.shape) or (space.dtype != stored and not both_float):
            raise FlexrlError(
                f"{ds.ref}: its env {spec.id} gives {what} {space.dtype}{list(space.shape)}, "
                f"the data holds {array.describe()}"
            )
        if space.dtype != stored:  # float64 observations stored as float32: the data's space
            space = type(space)(space.low.astype(stored), space.high.astype(stored), dtype=stored)
        out.append(space)
    return spec, out[0], out[1]


def _pad_reset_row(values: np.ndarray) -> np.ndarray:
    values = np.concatenate([np.zeros_like(values[:1]), values], axis=0)
    # Minari 0.5's Arrow backend cannot read back 1-D info arrays (empty shape metadata), so
    # one value per step travels as a column; import restores shapes from `flexrl_schema`.
    return values[:, None] if values.ndim == 1 else values


def _buffer(episode: Episode, index: int):
    from minari.data_collector import EpisodeBuffer

    infos = {k: _pad_reset_row(v) for k, v in episode.infos.items()}
    if episode.goals is not None:
        infos[GOALS_INFO] = _pad_reset_row(episode.goals)
    named = (
        (TASK_OPTION, episode.task),
        (POLICY_OPTION, episode.policy),
        (INSTRUCTION_OPTION, episode.instruction),
    )
    options = {k: v for k, v in named if v is not None}
    return EpisodeBuffer(
        id=index,
        seed=episode.seed,
        options=options or None,
        observations=episode.observations_t1(),
        actions=episode.actions,
        rewards=episode.rewards,
        terminations=episode.terminations,
        truncations=episode.truncations,
        infos=infos,
    )


def export_minari(
    ref: str,
    workspace: str | Path | None = None,
    *,
    out: str | Path | None = None,
    dataset_id: str | None = None,
    data_format: str = "hdf5",
    env: Mapping[str, Any] | None = None,
) -> tuple[str, Path]:
    """Write version `ref` as a Minari dataset; return (dataset id, its directory).

    With `out`, the dataset is `out/<dataset_id>/` (load it with MINARI_DATASETS_PATH=out);
    without, it goes to Minari's own datasets directory. The id defaults to `<name>-v<N>`.
    `env` (an EnvConfig as JSON: the env the data was collected in) gives the spec and spaces.
    """
    if data_format not in FORMATS:
        raise FlexrlError(f"unknown Minari format {data_format!r}: use one of {', '.join(FORMATS)}")
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.storage.datasets_root_dir import get_dataset_path

    ds = open_dataset(ref, workspace)
    dataset_id = dataset_id or f"{ds.name}-v{ds.version}"
    try:
        parse_dataset_id(dataset_id)
    except ValueError:
        raise FlexrlError(
            f"invalid Minari dataset id {dataset_id!r}: use (namespace/)name-v<N>"
        ) from None
    spaces = _spaces(ds, env)
    root = None if out is None else Path(out)
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    with _minari_root(root):
        target = Path(get_dataset_path(dataset_id))
        if target.exists():
            raise FlexrlError(f"Minari dataset {dataset_id!r} already exists at {target}")
        try:
            dataset = None
            batch = []
            for episode in ds:
                batch.append(_buffer(episode, episode.index))
                if len(batch) == BATCH_EPISODES:
                    dataset = _write_batch(dataset, batch, ds, dataset_id, data_format, spaces)
                    batch = []
            if batch or dataset is None:
                dataset = _write_batch(dataset, batch, ds, dataset_id, data_format, spaces)
            dataset.storage.update_metadata(
                {SCHEMA_KEY: ds.schema.to_json(), "flexrl_source": f"{ds.ref} {ds.digest}"}
            )
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)  # never leave half an export
            raise
    return dataset_id, target


def _write_batch(dataset, batch, ds, dataset_id, data_format, spaces):
    if dataset is not None:
        dataset.update_dataset_from_buffer(batch)
        return dataset
    import minari

    spec, observation_space, action_space = spaces
    with warnings.catch_warnings():
        for message in _UNKNOWN_METADATA_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        if spec is None:  # said by the CLI in one line; Minari's two warnings would repeat it
            warnings.filterwarnings("ignore", message=r"env_spec is None", category=UserWarning)
            warnings.filterwarnings(
                "ignore", message=r"`eval_env` is set to None", category=UserWarning
            )
        return minari.create_dataset_from_buffers(
            dataset_id,
            batch,
            env=spec,
            eval_env=spec,
            observation_space=observation_space,
            action_space=action_space,
            algorithm_name="flexrl",
            description=f"Exported from flexrl dataset {ds.ref} (manifest {ds.digest}).",
            data_format=data_format,
            jpeg_encoding=False,  # lossless, always
        )


def _data_path(path: Path) -> Path:
    for candidate in (path / "data", path):
        if (candidate / "metadata.json").is_file():
            return candidate
    raise FlexrlError(f"{path}: not a Minari dataset (no data/metadata.json)")


def import_minari(
    path: str | Path,
    name: str,
    workspace: str | Path | None = None,
    *,
    info_keys: Sequence[str] | None = None,
    lineage: Lineage | None = None,
    allow_nonfinite: bool = False,
) -> Manifest:
    """Read a dataset Minari wrote (HDF5 or Arrow) into a new flexrl dataset `name` (v1).

    Per-step infos with T+1 rows become flexrl infos without their reset row: all numeric
    ones by default, or only `info_keys`.
    """
    from gymnasium import spaces
    from minari.dataset.minari_storage import MinariStorage

    paths = dataset_paths(workspace, name)
    if paths.list_versions():
        raise FlexrlError(f"dataset {name!r} already exists: import into a new name")
    data_path = _data_path(Path(path))
    try:
        storage = MinariStorage.read(data_path)
    except FlexrlError:
        raise
    except Exception as e:
        raise FlexrlError(f"{path}: Minari cannot read it ({type(e).__name__}: {e})") from None
    for what, space in (
        ("observation", storage.observation_space),
        ("action", storage.action_space),
    ):
        if not isinstance(space, spaces.Box):
            raise FlexrlError(
                f"{path}: {what} space is {type(space).__name__}; flexrl stores Box spaces only"
            )
    metadata = storage.metadata
    source = f"minari:{metadata.get('dataset_id', data_path.parent.name)}"
    total = storage.total_episodes
    if total == 0:
        raise FlexrlError(f"{path}: the Minari dataset has no episodes")
    schema = metadata.get(SCHEMA_KEY)
    shapes: dict[str, tuple[int, ...]] = {}
    if isinstance(schema, dict):  # exported by flexrl: restore exact per-step shapes
        shapes = {k: tuple(v["shape"]) for k, v in (schema.get("infos") or {}).items()}
        if schema.get("goals"):
            shapes[GOALS_INFO] = tuple(schema["goals"]["shape"])
    obs_dtype = storage.observation_space.dtype
    act_dtype = storage.action_space.dtype
    lineage = (
        replace(lineage, source=lineage.source or source) if lineage else Lineage(source=source)
    )
    # The writer commits on leaving the block, or deletes what it wrote if anything failed.
    with ShardWriter(
        name, workspace, lineage=lineage, allow_nonfinite=allow_nonfinite,
        message=f"imported from {path}",
    ) as writer:  # fmt: skip
        for start in range(0, total, BATCH_EPISODES):
            ids = list(range(start, min(start + BATCH_EPISODES, total)))
            metas = list(storage.get_episode_metadata(ids))
            for raw, meta in zip(storage.get_episodes(ids), metas, strict=True):
                writer.add(_episode(raw, meta, obs_dtype, act_dtype, info_keys, shapes, path))
    (manifest,) = writer.committed
    return manifest


def _episode(
    raw: dict[str, Any],
    meta: dict[str, Any],
    obs_dtype,
    act_dtype,
    info_keys: Sequence[str] | None,
    shapes: dict[str, tuple[int, ...]],
    path: str | Path,
) -> Episode:
    steps = len(raw["rewards"])
    infos, goals = {}, None
    for key, value in (raw.get("infos") or {}).items():
        if isinstance(value, dict) or (info_keys is not None and key not in info_keys):
            continue
        array = np.asarray(value)
        if array.dtype == object or array.ndim == 0 or len(array) != steps + 1:
            if info_keys is not None:
                raise FlexrlError(f"{path}: info {key!r} is not a numeric array of T+1 rows")
            continue
        if key in shapes:
            array = array.reshape(len(array), *shapes[key])
        if key == GOALS_INFO:
            goals = array[1:]
        else:
            infos[key] = array[1:]
    for key in info_keys or ():
        if key not in infos:
            raise FlexrlError(f"{path}: episode {raw.get('id')} has no info {key!r}")
    options = meta.get("options") or {}
    seed = meta.get("seed")
    return make_episode(
        observations=np.asarray(raw["observations"], dtype=obs_dtype),
        actions=np.asarray(raw["actions"], dtype=act_dtype),
        rewards=np.asarray(raw["rewards"]),
        terminations=np.asarray(raw["terminations"]),
        truncations=np.asarray(raw["truncations"]),
        goals=goals,
        infos=infos,
        seed=None if seed is None else int(seed),
        task=options.get(TASK_OPTION),
        policy=options.get(POLICY_OPTION),
        instruction=options.get(INSTRUCTION_OPTION),
    )
