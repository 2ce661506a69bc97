"""`flexrl eval`: real PPO checkpoints, real MuJoCo, real subprocesses, a real MP4.

Two runs are trained once for the module (seconds): a quickstart "untrained" policy (one
update on 16 steps: its mean action is about zero, which scores about 25) and a multi-task
Humanoid policy after one tiny update (for per-task rows and the video). The slow test adds a
quickstart policy that balances the inverted pendulum: the recipe as shipped, which stops once
its last 20 training episodes reach 1000 (after 19-23 updates for every seed and math path
tried, about 30 s on one core; its deterministic policy then scores 1000).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from flexrl import evaluation
from flexrl.config import EnvConfig
from flexrl.fileio import sha256_file
from flexrl.rollout.sources import load_policy_source
from flexrl.workspace import ArtifactKind, RunStatus, Workspace

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "ppo.num_minibatches=1", "--set", "ppo.update_epochs=1"]


def flexrl_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real `flexrl` in a subprocess (the conftest `cli` fixture, usable at module scope
    and with a replaced environment)."""
    return subprocess.run(
        [sys.executable, "-m", "flexrl", *args],
        cwd=REPO,
        env={**os.environ, "FLEXRL_DEBUG": ""} if env is None else env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """Workspace with the runs `untrained` (quickstart) and `humanoid` (multi-task)."""
    ws = tmp_path_factory.mktemp("eval") / "ws"
    jobs = {
        "untrained": [
            "--config", "recipes/quickstart.yaml", "--set", "ppo.total_steps=16",
            "--set", "env.num_envs=1", "--set", "ppo.num_steps=16", *TINY,
        ],
        "humanoid": [
            "--config", "recipes/humanoid_multitask.yaml", "--set", "ppo.total_steps=64",
            "--set", "env.num_envs=2", "--set", "ppo.num_steps=32", *TINY,
            "--set", "ppo.hidden_sizes=[32,32]", "--set", "ppo.init_from=null",  # from scratch
        ],
    }  # fmt: skip
    for name, args in jobs.items():
        result = flexrl_cli("train", *args, "--name", name, "--workspace", str(ws))
        assert result.returncode == 0, result.stderr
    return ws


def eval_json(cli, ws: Path, *args: str) -> dict:
    result = cli("eval", *args, "--json", "--workspace", str(ws))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_a_trained_policy_scores_far_above_an_untrained_one(cli, trained):
    result = flexrl_cli("train", "--config", "recipes/quickstart.yaml", "--name", "balanced",
                        "--workspace", str(trained))  # fmt: skip
    assert result.returncode == 0, result.stderr
    balanced = eval_json(cli, trained, "balanced", "--episodes", "5")
    row = balanced["tasks"]["InvertedPendulum-v5"]
    assert set(balanced["tasks"]) == {"InvertedPendulum-v5"}
    assert row["episodes"] == 5 and len(balanced["episodes"]) == 5
    assert "lin_vel_error" in row and row["lin_vel_error"] is None  # not a Humanoid skill

    # The table, and the same numbers in the run's eval.json.
    result = cli("eval", "untrained", "--episodes", "5", "--workspace", str(trained))
    assert result.returncode == 0, result.stderr
    for text in ("InvertedPendulum-v5", "return", "terminated", "recorded"):
        assert text in result.stdout
    run_id = result.stdout.split("recorded")[-1].split()[0]
    untrained = json.loads((trained / "runs" / run_id / "artifacts" / "eval.json").read_text())
    assert untrained["run"] == run_id

    # 1000 is a full episode; a near-zero action lets the pole fall within ~30 steps.
    good, bad = balanced["summary"]["eval_return"], untrained["summary"]["eval_return"]
    assert good >= 500 and good > 5 * bad, (good, bad)
    assert balanced["summary"]["eval_fall_rate"] < untrained["summary"]["eval_fall_rate"] == 1.0


def test_humanoid_rows_per_task_video_and_lineage(cli, trained, tmp_path):
    video = tmp_path / "walk.mp4"
    report = eval_json(
        cli, trained, "humanoid", "--episodes", "2", "--video", str(video), "--video-steps", "60"
    )
    # Trained on all four skills, so every one gets a row with its tracking errors.
    assert list(report["tasks"]) == ["walk_forward", "turn_left", "turn_right", "goal"]
    for row in report["tasks"].values():
        assert row["episodes"] == 2 and 0.0 <= row["fall_rate"] <= 1.0
        assert row["lin_vel_error"] >= 0.0 and row["yaw_rate_error"] >= 0.0
        assert abs(row["forward_speed"]) < 5.0  # m/s in the heading frame, a real number
        assert row["return_std"] >= 0.0 and row["length_mean"] >= 1
    # A standing start: walk_forward's 1 m/s target is missed by about 1 m/s, turning's (0.7 m/s
    # on its arc in this recipe) by less.
    rows = report["tasks"]
    assert rows["walk_forward"]["lin_vel_error"] > rows["turn_left"]["lin_vel_error"]
    # ... because it barely moves forward: the error is about the target minus the speed.
    walk = rows["walk_forward"]
    assert walk["lin_vel_error"] >= 1.0 - walk["forward_speed"] - 1e-9
    # Distance along the command, from positions: the recipe's turns walk their arc too.
    # (None where no motion is asked: test_distance_along_command_from_positions.)
    assert all(isinstance(row["distance"], float) for row in rows.values())
    # Radians turned the commanded way, from headings: none where no turn is asked.
    assert walk["turned"] is None and isinstance(rows["turn_right"]["turned"], float)
    assert {e["task"] for e in report["episodes"]} == set(rows)
    ends = {e["task"]: e["command_at_end"] for e in report["episodes"] if e["task"] != "goal"}
    assert ends == {
        "walk_forward": [1, 0, 0],
        "turn_left": [0.7, 0, 0.5],
        "turn_right": [0.7, 0, -0.5],
    }

    # A playable MP4: the frames the report says, at the small default size.
    assert report["video"]["path"] == str(video) and not list(tmp_path.glob(".*tmp*"))
    first = report["episodes"][0]  # the video replays the first evaluated episode
    if first["length"] <= 60:  # ~40 steps before this policy falls
        assert report["video"]["episode_return"] == first["episode_return"]
    reader = imageio.get_reader(video)
    frames = [frame for frame in reader]
    assert len(frames) == report["video"]["frames"] <= 61
    assert frames[0].shape == (240, 320, 3) and frames[0].std() > 0  # not a blank image

    # Recorded: inputs the checkpoint (by digest) and the source run, outputs eval.json + video.
    ws = Workspace(trained)
    record, source = ws.load_run(report["run"]), ws.resolve_run("humanoid")
    assert record.kind == "eval" and record.name == "eval-humanoid"
    assert record.status == RunStatus.COMPLETED
    (final,) = [a for a in source.outputs if a.kind == ArtifactKind.CHECKPOINT]
    policy, parent = record.inputs
    assert (policy.kind, policy.role) == (ArtifactKind.CHECKPOINT, "policy")
    assert policy.digest == final.digest  # the node lineage joins on
    assert (parent.kind, parent.role, parent.ref) == (ArtifactKind.RUN, "source", source.id)
    metrics, clip = record.outputs
    assert json.loads((trained / metrics.ref).read_text()) == report
    assert clip.role == "video" and clip.digest == sha256_file(video)
    assert record.metrics_last["eval_return"] == pytest.approx(report["summary"]["eval_return"])
    assert "eval_return/turn_left" in record.metrics_last

    lineage = cli("runs", "lineage", "humanoid", "--json", "--workspace", str(trained))
    assert f"run:{record.id}" in json.loads(lineage.stdout)["downstream"]
    listing = cli("runs", "ls", "--kind", "eval", "--workspace", str(trained))
    assert "eval_return=" in listing.stdout


def test_one_task_by_flag_and_checkpoint_path_as_source(cli, trained):
    checkpoint = next(trained.glob("runs/*-humanoid-*/artifacts/final.pt"))
    report = eval_json(cli, trained, str(checkpoint), "--task", "goal", "--episodes", "1")
    assert list(report["tasks"]) == ["goal"]
    assert report["source"]["run"] is None
    assert report["source"]["digest"] == sha256_file(checkpoint)
    (policy,) = Workspace(trained).load_run(report["run"]).inputs  # no source run: a file
    assert policy.role == "policy" and policy.digest == sha256_file(checkpoint)


def test_command_holds_the_goal_task_at_it(cli, trained):
    """Every step is tracked against the one command: a standing start at vx 0.6 misses by
    about 0.6 minus the forward speed, with no sideways or turning part."""
    report = eval_json(cli, trained, "humanoid", "--command", "0.6,0,0", "--episodes", "2")
    assert report["settings"]["command"] == [0.6, 0.0, 0.0]
    assert list(report["tasks"]) == ["goal"]
    row = report["tasks"]["goal"]
    assert row["lin_vel_error"] >= 0.6 - row["forward_speed"] - 1e-9
    assert row["turned"] is None and isinstance(row["distance"], float)
    assert all(e["command_at_end"] == [0.6, 0, 0] for e in report["episodes"])


def test_the_same_seed_gives_the_same_numbers(trained):
    ws = Workspace(trained)
    source = load_policy_source(ws, "humanoid")

    def run(seed: int, deterministic: bool, num_envs: int = 3) -> list:
        settings = evaluation.EvalSettings(
            2, ["turn_left", "goal"], deterministic, seed, num_envs=num_envs
        )
        return evaluation.evaluate(source, settings, progress=False)[0].to_json()["episodes"]

    assert run(3, deterministic=False) == run(3, deterministic=False)
    assert run(3, deterministic=False) != run(4, deterministic=False)
    assert run(3, deterministic=True) == run(3, deterministic=True)
    # a stochastic episode samples from its own generator, whatever ran beside it
    alone = run(3, deterministic=False, num_envs=1)
    assert [e["seed"] for e in alone] == [e["seed"] for e in run(3, deterministic=False)]


def reference_episode(env, policy, seed: int, task: str) -> tuple[float, int, bool, float]:
    """The plain loop `flexrl eval` ran before the rollout package: one env, one policy call
    per step. Return, length, terminated and the mean velocity error."""
    obs, info = env.reset(seed=seed, options={"task": task})
    total, length, errors = 0.0, 0, []
    while True:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs))
        total += float(reward)
        length += 1
        errors.append(float(np.linalg.norm(info["lin_vel"] - info["goal"][:2])))
        if terminated or truncated:
            return total, length, bool(terminated), float(np.mean(errors))


def test_the_batched_loop_reproduces_the_one_env_loop(trained):
    """One slot: the same episodes, step for step, as stepping one env with one policy call per
    step. Several slots (physics on threads, episodes handed to free slots) change nothing but
    the batch the policy sees: with its rows evaluated one at a time they are bit-identical
    too, so any difference at --num-envs N comes from batched float32 inference alone."""
    from flexrl.envs import make_env
    from flexrl.rl.checkpoint import load_policy, run_checkpoint
    from flexrl.rollout import actors

    ws = Workspace(trained)
    source = load_policy_source(ws, "humanoid")
    path, _ = run_checkpoint(ws, ws.resolve_run("humanoid"))
    policy = load_policy(path)
    env = make_env(source.env)
    seeds = evaluation.episode_seeds(5, 3)
    try:
        expected = [
            reference_episode(env, policy, s, t) for t in ("turn_left", "goal") for s in seeds
        ]
    finally:
        env.close()

    def observed(num_envs: int) -> list[tuple[float, int, bool, float]]:
        settings = evaluation.EvalSettings(3, ["turn_left", "goal"], True, 5, num_envs=num_envs)
        report, _ = evaluation.evaluate(source, settings, progress=False)
        return [
            (e.episode_return, e.length, e.terminated, e.lin_vel_error) for e in report.episodes
        ]

    # the same steps; returns summed pairwise rather than one by one (1e-14 apart)
    same = functools.partial(np.testing.assert_allclose, desired=np.array(expected), rtol=1e-12)
    same(np.array(observed(1)))
    batched_act = actors.PPOActor.act

    def one_row_at_a_time(self, slots, obs, goals, rngs):
        rows = [
            batched_act(self, [s], obs[j : j + 1], None, rngs[j : j + 1])
            for j, s in enumerate(slots)
        ]
        return np.concatenate(rows)

    actors.PPOActor.act = one_row_at_a_time
    try:
        same(np.array(observed(4)))
    finally:
        actors.PPOActor.act = batched_act


class ReturnToGoActor:
    """What a Decision Transformer needs from the loop: a reset per episode and slot, each
    step's goal, and each reward to decrement that slot's return-to-go."""

    def __init__(self, target: float) -> None:
        self.target, self.goals = target, []
        self.return_to_go: dict[int, float] = {}
        self.earned: list[float] = []  # per episode begun: target - its final return-to-go

    def reset(self, slot: int) -> None:
        if slot in self.return_to_go:
            self.earned.append(self.target - self.return_to_go[slot])
        self.return_to_go[slot] = self.target

    def act(self, slots, obs, goals, rngs) -> np.ndarray:
        self.goals.extend(goals.copy())
        np.testing.assert_array_equal(obs[:, -3:], goals)  # the goal is in the observation
        return np.zeros((len(slots), 17), np.float32)

    def observe(self, slots, rewards) -> None:
        for slot, reward in zip(slots, rewards, strict=True):
            self.return_to_go[slot] -= reward


def test_any_actor_plugs_into_the_rollout_loop():
    from flexrl.rollout.loop import EpisodeSpec, rollout
    from flexrl.rollout.slots import EnvSlots

    slots = EnvSlots(EnvConfig(max_episode_steps=30), num_envs=2)
    actor = ReturnToGoActor(target=500.0)
    specs = [EpisodeSpec(k, s, "turn_right") for k, s in enumerate(evaluation.episode_seeds(0, 3))]
    try:
        rolled = list(rollout(slots, actor, specs, policy="test"))
    finally:
        slots.close()
    assert sorted(r.episode.index for r in rolled) == [0, 1, 2]
    for slot in list(actor.return_to_go):
        actor.reset(slot)  # closes the last episodes' accounts
    returns = sorted(r.result.episode_return for r in rolled)
    assert sorted(actor.earned) == pytest.approx(returns)  # every reward reached its slot
    np.testing.assert_array_equal(actor.goals[0], [0.0, 0.0, -0.5])  # turn_right's command
    for r in rolled:
        assert r.episode.task == "turn_right" and r.episode.policy == "test"
        assert r.result.length == r.episode.length <= 30
        assert r.result.terminated == (r.episode.length < 30)
        assert r.episode.seed == specs[r.episode.index].seed


def runs_in(ws: Path) -> list[str]:
    return sorted(p.name for p in (ws / "runs").iterdir())


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_sources_exit_2_in_one_line_and_record_nothing(cli, trained, tmp_path):
    before = runs_in(trained)
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("hello")
    cases = [
        (["no-such-run"], "'no-such-run' is neither a checkpoint file nor a run"),
        ([str(tmp_path / "missing.pt")], "checkpoint not found"),
        ([str(not_a_checkpoint)], "not a readable checkpoint"),
        (["humanoid", "--task", "jump"], "unknown task 'jump'"),
        (["untrained", "--task", "goal"], "InvertedPendulum-v5, which has no tasks"),
        (["untrained", "--video", str(tmp_path / "no" / "v.mp4")], "does not exist"),
        (["humanoid", "--command", "0.5,0"], "expected VX,VY,YAW_RATE"),
        (["humanoid", "--command", "0.5,0,0", "--task", "walk_forward"], "--task walk_forward"),
        (["untrained", "--command", "0.5,0,0"], "InvertedPendulum-v5 takes no goal commands"),
        (["random"], "'random' has no env of its own"),
        (["untrained", "--num-envs", "0"], "--num-envs"),
    ]
    for args, message in cases:
        assert_one_line_error(cli("eval", *args, "--workspace", str(trained)), message)
    assert runs_in(trained) == before


def without_gl_choice() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    return {**env, "FLEXRL_DEBUG": ""}


@pytest.mark.parametrize(
    "breakage",
    [
        # libglvnd finds no EGL vendor (no Mesa/NVIDIA driver): "Cannot initialize a EGL
        # device display", raised when the context is made.
        "no-driver",
        # libEGL.so.1 itself cannot be loaded (an empty file shadows it): PyOpenGL's platform
        # stays None and `import mujoco` fails with an AttributeError.
        "no-libegl",
    ],
)
def test_video_without_egl_fails_in_one_line_naming_what_to_install(trained, tmp_path, breakage):
    env = without_gl_choice()
    if breakage == "no-driver":
        env["__EGL_VENDOR_LIBRARY_FILENAMES"] = str(tmp_path / "no-vendor.json")
    else:
        (tmp_path / "lib").mkdir()
        (tmp_path / "lib" / "libEGL.so.1").write_bytes(b"")
        (tmp_path / "lib" / "libEGL.so").write_bytes(b"")
        env["LD_LIBRARY_PATH"] = str(tmp_path / "lib")
    before = runs_in(trained)
    video = tmp_path / "v.mp4"
    result = flexrl_cli(
        "eval", "humanoid", "--video", str(video), "--workspace", str(trained), env=env
    )
    assert_one_line_error(result, "MUJOCO_GL=egl", "libegl1 libgl1-mesa-dri", "libosmesa6")
    assert runs_in(trained) == before and not video.exists()


def test_gl_errors_name_the_package_for_each_backend():
    # OSMesa may be installed where this runs, so its message is checked on the translation.
    from flexrl.rollout import video

    osmesa = video.gl_error(AttributeError("'NoneType' object has no attribute 'x'"), "osmesa")
    assert "MUJOCO_GL=osmesa (its GL library could not be loaded)" in str(osmesa)
    assert "apt-get install libosmesa6" in str(osmesa)
    glfw = video.gl_error(RuntimeError("no display. more"), "glfw")
    assert "(no display)" in str(glfw) and "unset MUJOCO_GL" in str(glfw)
    assert "\n" not in str(osmesa) + str(glfw)


def test_distance_along_command_from_positions():
    """Hand-computed steps: the command is in the heading frame of the step's start."""
    from flexrl.rollout.metrics import distance_along_command

    def one_step(start, end, heading, goal=(1.0, 0.0, 0.0)):
        xy, headings = np.array([start, end], float), np.array([heading, 0.0])
        return distance_along_command(xy, headings, np.array([goal]))

    # facing +y (heading pi/2), commanded forward: moving 0.3 m along +y counts 0.3
    assert one_step((0, 0), (0.1, 0.3), np.pi / 2) == pytest.approx(0.3)
    # commanded sideways left while facing +x: left is +y; moving -y counts negative
    assert one_step((0, 0), (0, -0.2), 0, (0.0, 0.5, 0.0)) == pytest.approx(-0.2)
    # a diagonal command [0.3, 0.4] (|v| = 0.5) facing +x: moving (0.3, 0.4) counts 0.5 m
    assert one_step((0, 0), (0.3, 0.4), 0, (0.3, 0.4, 0.0)) == pytest.approx(0.5)
    # turning on the spot commands no motion
    assert one_step((0, 0), (1, 1), 0, (0.0, 0.0, 0.5)) is None
    # over steps, only those that command motion count: 0.2 forward, then a spin, then 0.1
    xy = np.array([[0, 0], [0.2, 0], [0.2, 5.0], [0.3, 5.0]])
    goals = np.array([[1.0, 0, 0], [0, 0, 0.5], [1.0, 0, 0]])
    assert distance_along_command(xy, np.zeros(4), goals) == pytest.approx(0.3)


def test_turn_toward_command_from_headings():
    from flexrl.rollout.metrics import turn_toward_command

    def one_step(before, after, yaw_rate):
        return turn_toward_command(np.array([before, after]), np.array([[0.0, 0.0, yaw_rate]]))

    # a left turn of 0.1 rad counts +0.1 when left is asked, -0.1 when right is
    assert one_step(0.2, 0.3, 0.5) == pytest.approx(0.1)
    assert one_step(0.2, 0.3, -0.5) == pytest.approx(-0.1)
    # across the +-pi seam a small left turn is still small: 3.1 -> -3.1 is +0.083 rad
    assert one_step(3.1, -3.1, 0.5) == pytest.approx(2 * np.pi - 6.2)
    # no turn commanded: none
    assert one_step(0.0, 1.0, 0.0) is None
