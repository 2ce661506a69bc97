"""`flexrl collect` end to end: real subprocesses, real MuJoCo, real zarr shards, real lineage."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from flexrl.config import EnvConfig
from flexrl.envs import make_flat_env
from flexrl.fileio import sha256_file
from flexrl.store import open_dataset
from flexrl.workspace import ArtifactKind, RunStatus, Workspace

REPO = Path(__file__).resolve().parents[1]
PENDULUM = "InvertedPendulum-v5"


def flexrl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flexrl", *args],
        cwd=REPO,
        env={**os.environ, "FLEXRL_DEBUG": "", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def seeds(ds) -> list[int]:
    return [episode.seed for episode in ds]


def collect(ws: Path, *args: str) -> dict:
    result = flexrl("collect", *args, "--json", "--workspace", str(ws))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with a briefly trained quickstart PPO (InvertedPendulum) named `quick`."""
    root = tmp_path_factory.mktemp("collect") / "ws"
    result = flexrl(
        "train", "--config", "recipes/quickstart.yaml", "--set", "ppo.total_steps=20000",
        "--name", "quick", "--workspace", str(root),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="module")
def random_pendulum(ws: Path) -> dict:
    return collect(ws, "--policy", "random", "--env-id", PENDULUM, "--dataset", "pend-rand",
                   "--episodes", "12")  # fmt: skip


@pytest.fixture(scope="module")
def ppo_pendulum(ws: Path) -> dict:
    return collect(ws, "--policy", "quick", "--dataset", "pend-ppo", "--episodes", "6",
                   "--seed", "0")  # fmt: skip


def test_random_collection_shows_in_data_info(ws, random_pendulum):
    assert random_pendulum["ref"] == "pend-rand@v1" and random_pendulum["episodes"] == 12
    result = flexrl("data", "info", "pend-rand", "--json", "--workspace", str(ws))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["ref"] == "pend-rand@v1"
    assert info["stats"]["episodes"] == 12 and info["stats"]["steps"] == random_pendulum["steps"]
    assert info["stats"]["returns"]["mean"] == pytest.approx(random_pendulum["mean_return"])
    ds = open_dataset("pend-rand", ws)
    # No --seed: a fresh seed, recorded; episode k has seed SEED + k.
    seed = random_pendulum["seed"]
    assert sorted(seeds(ds)) == list(range(seed, seed + 12))
    assert Workspace(ws).load_run(random_pendulum["run"]).seed == seed
    # InvertedPendulum-v5 pays 1 per step but 0 for the step that drops the pole.
    np.testing.assert_allclose(ds.episode_returns, ds.episode_lengths - 1)
    episode = ds.episode(0)
    assert episode.policy == "random" and episode.task is None and episode.goals is None
    assert np.all(np.abs(ds.array("actions")) <= 3.0)  # uniform in the action bounds


def test_ppo_collection_beats_random_and_records_lineage(ws, random_pendulum, ppo_pendulum):
    # A collect that ignored the policy would score like random (about 5 here).
    assert ppo_pendulum["mean_return"] > 4 * random_pendulum["mean_return"]
    workspace = Workspace(ws)
    train = workspace.resolve_run("quick")
    checkpoint = [a for a in train.outputs if a.kind == ArtifactKind.CHECKPOINT][-1]
    assert checkpoint.digest == sha256_file(ws / checkpoint.ref)

    run = workspace.load_run(ppo_pendulum["run"])
    assert run.kind == "collect" and run.status == RunStatus.COMPLETED
    policy = next(a for a in run.inputs if a.role == "policy")
    assert policy.kind == ArtifactKind.CHECKPOINT and policy.digest == checkpoint.digest
    source = next(a for a in run.inputs if a.role == "source")
    assert source.kind == ArtifactKind.RUN and source.ref == train.id
    (output,) = run.outputs
    assert output.kind == ArtifactKind.DATASET and output.ref == "pend-ppo@v1"

    ds = open_dataset("pend-ppo", ws)
    assert output.digest == ds.digest
    lineage = ds.manifest.lineage
    assert lineage.producer_run == run.id and lineage.policy_digest == checkpoint.digest
    assert lineage.code_version
    assert {ds.episode(i).policy for i in range(len(ds))} == {checkpoint.digest}

    result = flexrl("runs", "lineage", train.id, "--json", "--workspace", str(ws))
    assert result.returncode == 0, result.stderr
    graph = json.loads(result.stdout)
    assert f"run:{run.id}" in graph["downstream"] and ds.digest in graph["downstream"]


def replay(env_cfg: EnvConfig, episode) -> None:
    """Re-run an episode from its seed and actions; every stored value must be the env's,
    exactly, in the dtype it was stored in (float64 is stored as float32 by default)."""
    env = make_flat_env(env_cfg)
    obs, _ = env.reset(seed=episode.seed)
    stored = episode.observations.dtype
    for t, action in enumerate(episode.actions):
        np.testing.assert_array_equal(obs.astype(stored), episode.observations[t])
        obs, reward, term, trunc, _ = env.step(action)
        assert np.asarray(reward, episode.rewards.dtype) == episode.rewards[t]
        assert (term, trunc) == (episode.terminations[t], episode.truncations[t])
    assert term or trunc
    np.testing.assert_array_equal(obs.astype(stored), episode.final_observation)  # obs[T]
    env.close()


def test_final_observation_is_what_the_env_returned(ws, ppo_pendulum):
    ds = open_dataset("pend-ppo", ws)
    episode = ds.episode(len(ds) - 1)
    assert episode.length > 20
    replay(EnvConfig(id=PENDULUM), episode)


@pytest.fixture(scope="module")
def humanoid(ws: Path) -> dict[str, dict]:
    """Random Humanoid `goal` episodes (falls after ~20 steps): 1 worker twice, and 2 workers."""
    args = ("--policy", "random", "--task", "goal", "--episodes", "6", "--num-envs", "2",
            "--seed", "7")  # fmt: skip
    return {
        "one": collect(ws, *args, "--dataset", "hum-one"),
        "again": collect(ws, *args, "--dataset", "hum-again"),
        "two": collect(ws, *args, "--dataset", "hum-two", "--workers", "2"),
    }


def test_humanoid_task_stores_goals_tasks_and_infos(ws, humanoid):
    ds = open_dataset("hum-one", ws)
    assert len(ds) == 6 and set(ds.episode_tasks.tolist()) == {"goal"}
    for episode in ds:
        assert episode.task == "goal" and episode.policy == "random"
        assert episode.goals.shape == (episode.length, 3)
        # The goal of each step is the command in the observation the action was chosen from.
        np.testing.assert_array_equal(episode.goals, episode.observations[:, 348:351])
        assert episode.infos["lin_vel"].shape == (episode.length, 2)
        assert episode.infos["yaw_rate"].shape == (episode.length,)
        terms = [v for k, v in episode.infos.items() if k.startswith("reward_terms.")]
        # stored as float32: the terms' sum and the total round apart in the last bit
        np.testing.assert_allclose(np.sum(terms, axis=0), episode.rewards, rtol=1e-6)
        assert episode.terminations[-1]  # a random Humanoid falls
    replay(EnvConfig(task="goal"), ds.episode(3))


def test_command_holds_the_goal_task_at_it(ws):
    collect(ws, "--policy", "random", "--command", "0.75,-0.1,0.2", "--episodes", "3",
            "--num-envs", "2", "--seed", "3", "--dataset", "at-command")  # fmt: skip
    ds = open_dataset("at-command", ws)
    assert set(ds.episode_tasks.tolist()) == {"goal"}
    goals = ds.array("goals")
    np.testing.assert_allclose(goals, np.tile([0.75, -0.1, 0.2], (len(goals), 1)))


def test_same_seed_gives_identical_arrays(ws, humanoid):
    a, b = open_dataset("hum-one", ws), open_dataset("hum-again", ws)
    arrays = ["observations", "actions", "rewards", "terminations", "truncations", "goals",
              "final_observations", "infos/lin_vel"]  # fmt: skip
    for name in arrays:
        np.testing.assert_array_equal(a.array(name), b.array(name), err_msg=name)
    assert seeds(a) == seeds(b)


def test_workers_split_the_episodes_with_disjoint_seeds(ws, humanoid):
    result = humanoid["two"]
    # The workers' shards are committed as one version, in worker order.
    assert [v["ref"] for v in result["versions"]] == ["hum-two@v1"]
    assert result["ref"] == "hum-two@v1" and result["episodes"] == 6
    both = open_dataset("hum-two@v1", ws)
    assert len(both) == 6 and sorted(seeds(both)) == list(range(7, 13))
    assert sorted(seeds(both)[:3]) == [7, 8, 9]  # worker 0's episodes first
    assert len(both.manifest.shards) == 2  # one shard per worker
    assert not list((Path(ws) / "datasets" / "hum-two" / "leases").glob("*.json"))
    run = Workspace(ws).load_run(result["run"])
    assert [(a.ref, a.digest) for a in run.outputs] == [
        (v["ref"], v["digest"]) for v in result["versions"]
    ]
    # An episode is the same whichever worker or env slot ran it.
    single = open_dataset("hum-one", ws)
    by_seed = {s: i for i, s in enumerate(seeds(single))}
    for episode in both:
        other = single.episode(by_seed[episode.seed])
        np.testing.assert_array_equal(episode.observations, other.observations)
        np.testing.assert_array_equal(episode.actions, other.actions)


def test_noisy_episodes_are_the_one_env_loops(ws):
    """The bytes collect stores, against the plain loop it ran before the rollout package: one
    env per episode k reset with seed + k, the policy's mean plus noise drawn from the
    episode's own generator default_rng([seed + k, 1]), clipped to the bounds."""
    import torch

    from flexrl.rl.checkpoint import load_policy, run_checkpoint

    collect(ws, "--policy", "quick", "--dataset", "pend-noisy", "--episodes", "3", "--seed", "40",
            "--noise", "0.3", "--num-envs", "1")  # fmt: skip
    path, _ = run_checkpoint(Workspace(ws), Workspace(ws).resolve_run("quick"))
    policy = load_policy(path)
    env = make_flat_env(EnvConfig(id=PENDULUM))
    for k, episode in enumerate(open_dataset("pend-noisy", ws)):
        assert episode.seed == 40 + k
        obs, _ = env.reset(seed=40 + k)
        rng = np.random.default_rng([40 + k, 1])
        for t in range(episode.length):
            np.testing.assert_array_equal(obs.astype(np.float32), episode.observations[t])
            with torch.no_grad():  # the mean before clipping: the noise is added to it
                x = torch.as_tensor(policy.obs_normalizer(obs[None]))
                mean = policy.agent.actor_mean(x).numpy()[0].astype(np.float64)
            noisy = mean + 0.3 * rng.standard_normal(mean.shape)
            action = np.clip(noisy, policy.action_low, policy.action_high)
            np.testing.assert_array_equal(action.astype(np.float32), episode.actions[t])
            obs, reward, *_ = env.step(episode.actions[t])
            assert np.float32(reward) == episode.rewards[t]
    env.close()


def test_stochastic_actions_differ_but_stay_in_bounds(ws, ppo_pendulum):
    collect(ws, "--policy", "quick", "--dataset", "pend-sample", "--episodes", "2", "--stochastic",
            "--seed", "0")  # fmt: skip
    # Episodes are stored as they end; compare the two episodes of seed 0.
    sampled = next(e for e in open_dataset("pend-sample", ws) if e.seed == 0)
    mean = next(e for e in open_dataset("pend-ppo", ws) if e.seed == 0)
    n = min(sampled.length, mean.length)
    assert not np.array_equal(sampled.actions[:n], mean.actions[:n])
    assert np.all(np.abs(sampled.actions) <= 3.0)


def test_nonfinite_actions_are_refused_unless_allowed(ws, tmp_path):
    """A policy gone NaN: collect refuses its episodes in one line and stores nothing."""
    import torch

    train = Workspace(ws).resolve_run("quick")
    source = [a for a in train.outputs if a.kind == ArtifactKind.CHECKPOINT][-1]
    checkpoint = torch.load(ws / source.ref, map_location="cpu", weights_only=True)
    for tensor in checkpoint["agent"].values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))
    broken = tmp_path / "nan.pt"
    torch.save(checkpoint, broken)
    args = ("collect", "--policy", str(broken), "--dataset", "pend-nan", "--episodes", "2")
    result = flexrl(*args, "--workspace", str(ws))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: pend-nan, episode 0"), lines
    assert "actions hold nan at step 0" in lines[0] and "--allow-nonfinite" in lines[0]
    assert [p for p in (ws / "datasets/pend-nan").rglob("*") if p.is_file()] == []

    log = REPO / "MUJOCO_LOG.TXT"  # MuJoCo logs the NaN controls it is then given, in cwd
    logged = log.exists()
    try:
        collect(ws, *args[1:], "--allow-nonfinite")
    finally:
        if not logged:
            log.unlink(missing_ok=True)
    assert np.isnan(open_dataset("pend-nan", ws).array("actions")).all()


def test_default_collections_add_fresh_episodes_and_say_what_they_appended(ws, ppo_pendulum):
    args = ("--policy", "random", "--env-id", PENDULUM, "--dataset", "mix", "--episodes", "3")
    first, second = collect(ws, *args), collect(ws, *args)
    assert first["previous"] is None and second["previous"] == "mix@v1"
    assert first["seed"] != second["seed"]
    ds = open_dataset("mix@v2", ws)
    expected = {first["seed"] + k for k in range(3)} | {second["seed"] + k for k in range(3)}
    assert sorted(seeds(ds)) == sorted(expected) and len(expected) == 6  # nothing stored twice

    # Appending another policy's episodes says so, and names the mix.
    result = flexrl("collect", "--policy", "quick", "--dataset", "mix", "--episodes", "2",
                    "--workspace", str(ws))  # fmt: skip
    assert result.returncode == 0, result.stderr
    digest = Workspace(ws).load_run(ppo_pendulum["run"]).inputs[0].digest
    assert f"mix@v2 → mix@v3, +2 episodes from quick ({digest[:19]})" in result.stdout
    assert "mix@v3 mixes 2 policies (6 from random, 2 from sha256:" in result.stdout
    # The first line names the run and the seed drawn for it, which the run records.
    match = re.fullmatch(r"run (\S+) in .* +· +seed (\d+)", result.stdout.splitlines()[0])
    assert match and Workspace(ws).load_run(match[1]).seed == int(match[2])

    info = flexrl("data", "info", "mix", "--json", "--workspace", str(ws))
    assert info.returncode == 0, info.stderr
    per_policy = json.loads(info.stdout)["stats"]["per_policy"]
    assert [(p["policy"], p["episodes"]) for p in per_policy] == [("random", 6), (digest, 2)]
    returns = open_dataset("mix", ws).episode_returns
    assert per_policy[1]["returns"]["mean"] == pytest.approx(returns[6:].mean())
    assert per_policy[1]["steps"] == int(open_dataset("mix", ws).episode_lengths[6:].sum())
    # Piped (not a terminal): the tables are not padded with spaces out to 200 columns.
    text = flexrl("data", "info", "mix", "--workspace", str(ws)).stdout
    assert "per policy" in text and re.search(rf"\n {digest[:19]} +2 ", text), text
    lines = text.splitlines()
    assert lines and all(line == line.rstrip() for line in lines), lines


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--policy", "no-such-run", "--dataset", "x"), "no-such-run"),
        (("--policy", "random", "--dataset", "../x"), "invalid dataset name"),
        (("--policy", "random", "--dataset", "x", "--episodes", "0"), "--episodes"),
        (("--policy", "random", "--dataset", "x", "--task", "moonwalk"), "moonwalk"),
        (("--policy", "random", "--dataset", "x", "--noise", "nan"), "--noise"),
        (("--policy", "random", "--dataset", "x", "--noise", "inf"), "--noise"),
        (("--policy", "random", "--dataset", "x", "--noise", "-0.1"), "--noise"),
        (("--policy", "random", "--dataset", "x", "--seed", "4294967294"), "--seed"),
        (("--policy", "random", "--dataset", "x", "--seed", "-1"), "--seed"),
        (("--policy", "random", "--dataset", "x", "--command", "1,0"), "--command"),
        (("--policy", "random", "--dataset", "x", "--command", "1,0,nan"), "--command"),
        (
            ("--policy", "random", "--dataset", "x", "--command", "1,0,0", "--task", "turn_left"),
            "--task turn_left",
        ),
        (
            ("--policy", "random", "--dataset", "x", "--command", "1,0,0", "--env-id", PENDULUM),
            "--env-id",
        ),
    ],
)
def test_bad_input_exits_2_and_stores_nothing(workspace, args, message):
    if "--episodes" not in args:
        args = (*args, "--episodes", "2")
    result = flexrl("collect", *args, "--workspace", str(workspace))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert not (workspace / "datasets").exists() or not any((workspace / "datasets").iterdir())
    assert Workspace(workspace).list_runs() == []


def _marked_processes(mark: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark.encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_sigterm_stops_workers_and_commits_nothing(workspace):
    token = uuid.uuid4().hex
    mark = f"FLEXRL_TEST_MARK={token}"
    command = (
        "collect --policy random --task walk_forward --dataset big --episodes 100000 "
        f"--workers 2 --workspace {workspace}"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "flexrl", *command.split()],
        cwd=REPO,
        env={**os.environ, "FLEXRL_TEST_MARK": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait for the parent, multiprocessing's resource tracker and both workers (they all
        # inherit the marked environment).
        deadline = time.monotonic() + 120
        while len(_marked_processes(mark)) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # let them collect for a while
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted by SIGTERM")
    (run,) = Workspace(workspace).list_runs()
    assert run.status == RunStatus.INTERRUPTED and run.outputs == []
    dataset = workspace / "datasets" / "big"
    assert not list(dataset.glob("versions/*.json"))
    assert not list(dataset.glob("shards/*")) and not list(dataset.glob("tmp/*"))
    deadline = time.monotonic() + 10
    while _marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _marked_processes(mark) == []


class _Stop(Exception):
    pass


def test_a_signal_mid_message_does_not_split_it():
    """The parent reads its workers' queue under SIGTERM's handler. A signal that arrives while
    half a message is in the pipe must wait until the message is read whole: cut short, the
    rest stays in the pipe and the next read takes it for a length and blocks forever (how CI
    once hung in the test above)."""
    import multiprocessing as mp
    import pickle
    import struct
    import threading

    from flexrl.collection.workers import _next_message

    messages = mp.get_context("spawn").Queue()
    body = pickle.dumps(("episode", 0, 7, 1.5))
    writer = messages._writer.fileno()

    def send_in_two_halves():
        os.write(writer, struct.pack("!i", len(body)) + body[:5])
        time.sleep(0.3)  # the reader is inside the message now
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)
        os.write(writer, body[5:])

    def stop(signum, frame):
        raise _Stop

    previous = signal.signal(signal.SIGTERM, stop)
    sender = threading.Thread(target=send_in_two_halves)
    try:
        sender.start()
        with pytest.raises(_Stop):  # still raised, once the message is whole
            _next_message(messages, 5.0)
        sender.join()
        assert not messages._reader.poll(0), "half a message was left in the pipe"
        messages.put(("episode", 1, 8, 2.5))
        assert _next_message(messages, 5.0) == ("episode", 1, 8, 2.5)
        assert _next_message(messages, 0.05) is None
    finally:
        sender.join()
        signal.signal(signal.SIGTERM, previous)
        messages.close()


def test_float64_is_stored_as_float32_unless_asked(ws):
    """MuJoCo observes in float64: collect stores float32 (half the bytes, what the policies
    consume) unless --float64, and a dataset keeps the dtypes of its first version."""
    args = ("--policy", "random", "--env-id", PENDULUM, "--episodes", "2", "--num-envs", "1",
            "--seed", "5")  # fmt: skip
    collect(ws, *args, "--dataset", "pend-32")
    collect(ws, *args, "--dataset", "pend-64", "--float64")
    f32, f64 = open_dataset("pend-32", ws), open_dataset("pend-64", ws)
    floats = [
        k for k, spec in f64.schema.step_arrays().items() if np.dtype(spec.dtype) == np.float64
    ]
    assert {"observations", "rewards"} <= set(floats)
    for name in floats:
        assert f32.array(name).dtype == np.float32, name
        np.testing.assert_array_equal(f64.array(name).astype(np.float32), f32.array(name))
    assert f32.array("actions").dtype == np.float32  # the env's own dtype, untouched

    collect(ws, *args, "--dataset", "pend-64")  # no --float64: the dataset keeps float64
    assert open_dataset("pend-64", ws).array("observations").dtype == np.float64
    result = flexrl("collect", *args, "--dataset", "pend-32", "--float64", "--workspace", str(ws))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "stores observations as float32" in lines[0], lines
    assert open_dataset("pend-32", ws).version == 1
